"""Act: carry out a `Decision` — idempotently, and resumably if the process dies half-way.

The world is reached through three small ports so the same code runs locally and in Kubernetes:

- `Registry` — the model registry (`k8s.sources.registry.MlflowRegistry`): aliases and version tags;
- `ServingTarget` — what the arms serve and how the router shares traffic (local files in `k8s.local`,
  Deployments and a ConfigMap in `k8s.kube`);
- `StatusStore` — the resource's status and its Events (a local JSON file, or the status subresource).

**Promotion is a small persisted state machine.** `record` saves the decision first: for PROMOTE the
status becomes ``Promoting`` with ``championVersion`` = the version being replaced and
``challengerVersion`` = the version being promoted — the whole intent — *before the first side effect*.
`complete` then runs the steps, each of which checks whether it is already done:

1. alias ``previous-champion`` -> the old champion;
2. alias ``champion`` -> the new one (refused if ``champion`` now points at a third version: someone else
   changed the registry, a human must look);
3. alias ``challenger`` removed if it still points at the promoted version (a newer challenger is kept);
4. tags on both versions: the decision, reason, message, evidence (JSON, cut to MLflow's limit) and
   ``kingmaker.champion_since`` / ``kingmaker.champion_until`` (which version was champion when);
5. re-point the arms (champion arm -> the new champion) and reset the challenger's weight to 0;
6. status ``Promoted`` with a history entry, and an Event.

If the process dies anywhere after the intent was saved, the next reconcile finds ``Promoting`` and runs
`complete` again from the top: done steps are skipped, the rest run, and it ends consistent. ROLLBACK is
the same with ``RollingBack``: weight 0 first, then the tag, history and ``RolledBack``. HOLD and ERROR
only record. Every decision is also counted and its evidence exported (`ControllerMetrics`), and logged.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from k8s import state as st
from k8s.decide import OUTCOME_OF, Decision, Outcome
from k8s.resource import Phase
from k8s.state import Arms, Pair, Spec, Status
from kingmaker.catalog import CATALOG, CONTROLLER, create
from kingmaker.errors import PermanentError, TemporaryError
from kingmaker.roles import Arm, Mode

log = logging.getLogger(__name__)

#: Environment variable naming failpoints to hit (comma-separated): the process SIGKILLs itself there.
#: For crash tests only (like etcd's gofail); unset in production.
FAILPOINTS_ENV = "KINGMAKER_FAILPOINTS"
#: Longest model-version tag value; None = MLflow's own limit (mlflow.utils.validation). Evidence is cut to fit.
TAG_LIMIT: int | None = None


def tag_limit() -> int:
    if TAG_LIMIT is not None:
        return TAG_LIMIT
    try:
        from mlflow.utils.validation import MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH
    except ImportError:  # pragma: no cover - an MLflow without the constant
        return 5000
    return int(MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH)


# --- ports ------------------------------------------------------------------------------------

class Registry(Protocol):
    def aliases(self) -> dict[str, str]:
        """alias -> version of the registered model."""
        ...

    def set_alias(self, alias: str, version: str) -> None: ...

    def delete_alias(self, alias: str) -> None: ...

    def tag(self, version: str, tags: Mapping[str, str]) -> None: ...


class ServingTarget(Protocol):
    def point(self, arms: Arms) -> bool:
        """Make each arm serve its version (rolling update / restart). True if anything changed."""
        ...

    def route(self, mode: Mode, challenger_weight: float) -> bool:
        """Set the router's mode and challenger share. True if anything changed."""
        ...


class StatusStore(Protocol):
    def save(self, status: Status) -> None: ...

    def event(self, type_: str, reason: str, message: str) -> None:
        """Record an Event (``type_`` Normal or Warning); failures are logged, never raised."""
        ...


class LostLeadership(TemporaryError):
    """Another replica leads now: stop before the next side effect."""


@dataclass
class Ports:
    registry: Registry
    serving: ServingTarget
    store: StatusStore
    metrics: ControllerMetrics
    guard: Callable[[], None] = field(default=lambda: None)  # raises LostLeadership when not leading


def current_pair(registry: Registry, spec: Spec) -> Pair:
    aliases = registry.aliases()
    champion = aliases.get(spec.champion_alias)
    if champion is None:
        raise PermanentError(f"{spec.model_name} has no @{spec.champion_alias} alias: train and register a model")
    challenger = aliases.get(spec.challenger_alias)
    return Pair(champion, None if challenger == champion else challenger)


# --- metrics ----------------------------------------------------------------------------------

class ReconcileResult(StrEnum):
    """How one reconcile ended (the ``result`` label of ``kingmaker_controller_reconciles_total``)."""

    OK = "ok"
    TEMPORARY_ERROR = "temporary_error"  # retried at the next tick
    PERMANENT_ERROR = "permanent_error"  # the resource went to phase Error
    NOT_LEADER = "not_leader"  # another replica leads now


class ControllerMetrics:
    """The controller's metrics (`kingmaker.catalog.CONTROLLER`) in their own registry.

    Every series but ``kingmaker_controller_leader`` names its resource (label ``championchallenger``). Each
    update replaces all of a resource's series of a gauge, so a model version, criterion or p-value that no
    longer applies leaves nothing behind. A replica that stops leading drops every resource's series: only
    the leader reports. Counters start at 0 for every outcome/reason and result when a resource is first seen,
    so that Prometheus sees each first increment as one.
    """

    PREFIX = "kingmaker_controller_"

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        made = {spec.name.removeprefix(self.PREFIX): create(spec, self.registry) for spec in CONTROLLER}
        self._gauges = {k: m for k, m in made.items() if isinstance(m, Gauge)}
        self._counters = {k: m for k, m in made.items() if isinstance(m, Counter)}
        self._series: dict[tuple[str, str], set[tuple[str, ...]]] = {}  # (metric, resource) -> label values

    def _put(self, metric: str, resource: str, values: Mapping[tuple[str, ...], float]) -> None:
        """Make ``values`` (label values after the resource -> value) the resource's only series of ``metric``."""
        gauge = self._gauges[metric]
        for gone in self._series.get((metric, resource), set()) - values.keys():
            gauge.remove(resource, *gone)
        for labels, value in values.items():
            gauge.labels(resource, *labels).set(value)
        self._series[(metric, resource)] = set(values)

    def policy_reloaded(self, name: str, outcome: str) -> None:
        """Count a re-read of the local policy file (`k8s.local.PolicyFile`): ``ok`` or ``invalid``."""
        self._counters["policy_reloads"].labels(name, outcome).inc()

    def _inc(self, metric: str, resource: str, *labels: str) -> None:
        if (metric, resource) not in self._series:
            zeros = ([(o.value, r.value) for r, o in OUTCOME_OF.items()] if metric == "decisions"
                     else [(r.value,) for r in ReconcileResult])
            for z in zeros:
                self._counters[metric].labels(resource, *z)
            self._series[(metric, resource)] = set(zeros)
        self._counters[metric].labels(resource, *labels).inc()

    def record(self, spec: Spec, decision: Decision, status: Status, now: float) -> None:
        """A decision was recorded: its outcome, evidence, the policy's bars, and the new status."""
        name, ev, policy = spec.name, decision.evidence, spec.policy
        self._inc("decisions", name, decision.outcome.value, decision.reason.value)
        self._put("last_decision_timestamp_seconds", name, {(): now})
        self._put("p_value", name, {(test,): p for test, p in (("better", ev.p_better), ("worse", ev.p_worse))
                                    if p is not None})
        self._put("alpha", name, {(): ev.alpha})
        bounds = {"estimate": ev.difference, **dict(zip(("lower", "upper"), ev.interval or (None, None), strict=True))}
        self._put("criterion_difference", name, {(ev.criterion.value, bound): value for bound, value in bounds.items()
                                                 if value is not None})
        arms = ((Arm.CHAMPION, ev.champion), (Arm.CHALLENGER, ev.challenger))
        self._put("matured_labelled", name, {(arm.value, e.version): e.labelled for arm, e in arms})
        self._put("matured_positives", name, {(arm.value, e.version): e.positives for arm, e in arms})
        self._put("min_matured_labelled", name, {(): policy.min_labelled_per_arm})
        self._put("min_matured_positives", name, {(): policy.min_positives_per_arm})
        g = policy.guardrails
        self._put("guardrail_limit", name, {("error_rate",): g.max_error_rate,
                                            ("p99_latency_seconds",): g.max_p99_latency_seconds,
                                            ("score_psi",): g.max_score_psi})
        readings = {("error_rate",): ev.guardrails.error_rate,
                    ("p99_latency_seconds",): ev.guardrails.p99_latency_seconds, ("score_psi",): ev.score_psi}
        self._put("guardrail_reading", name, {k: v for k, v in readings.items() if v is not None})
        self._put("evaluation_interval_seconds", name, {(): policy.evaluation_interval_seconds})
        self.status(name, status)

    def status(self, name: str, status: Status) -> None:
        """The resource's phase and the versions in each role."""
        self._put("phase", name, {(phase.value,): float(phase is status.phase) for phase in Phase})
        roles = ((Arm.CHAMPION, status.champion_version), (Arm.CHALLENGER, status.challenger_version))
        self._put("model_version_info", name, {(role.value, v): 1.0 for role, v in roles if v})

    def reconciled(self, name: str, result: ReconcileResult, status: Status | None, now: float) -> None:
        """One reconcile ended with ``result``; ``status`` is the resource's status afterwards, if known."""
        self._inc("reconciles", name, result.value)
        if result is ReconcileResult.OK:
            self._put("last_reconcile_timestamp_seconds", name, {(): now})
        if status is not None:
            self.status(name, status)

    def leading(self, leading: bool) -> None:
        """Whether this process may act; a process that may not drops every resource's series."""
        self._gauges["leader"].set(1.0 if leading else 0.0)
        if not leading:
            for name in {resource for _, resource in self._series}:
                self.forget(name)

    def forget(self, name: str) -> None:
        """Remove every series of resource ``name`` (deleted, or no longer ours to report)."""
        for metric, resource in [key for key in self._series if key[1] == name]:
            family = self._gauges.get(metric) or self._counters[metric]
            for labels in self._series.pop((metric, resource)):
                family.remove(resource, *labels)

    def count(self, outcome: str, reason: str, name: str | None = None) -> float:
        """Decisions counted with ``outcome`` and ``reason`` (of resource ``name``, or all): tests, ``--dry-run``."""
        exposed = CATALOG[self.PREFIX + "decisions"].exposed_name
        return sum(s.value for metric in self.registry.collect() for s in metric.samples
                   if s.name == exposed and s.labels["outcome"] == outcome and s.labels["reason"] == reason
                   and name in (None, s.labels["championchallenger"]))


# --- record -----------------------------------------------------------------------------------

def summary(decision: Decision) -> str:
    ev = decision.evidence
    head = f"{decision.outcome.value} ({decision.reason.value})"
    if decision.awaiting_approval:
        head += " awaiting approval"
    return (f"{head} champion v{ev.champion.version} vs challenger v{ev.challenger.version}: "
            f"{decision.message}")


def record(decision: Decision, spec: Spec, status: Status, ports: Ports, now: float) -> Status:
    """Save the decision (for PROMOTE/ROLLBACK: the intent, before any side effect), count, log, Event."""
    status = st.evaluated(status, decision, now=now, generation=spec.generation)
    ports.store.save(status)
    ports.metrics.record(spec, decision, status, now)
    line = summary(decision)
    warning = decision.outcome in (Outcome.ROLLBACK, Outcome.ERROR)
    log.log(logging.WARNING if warning else logging.INFO, "%s: %s", spec.name, line)
    ports.store.event("Warning" if warning else "Normal", decision.reason.value, line)
    return status


def act(decision: Decision, spec: Spec, status: Status, ports: Ports, now: float) -> Status:
    """Record ``decision``; on PROMOTE/ROLLBACK (approved, if approval is needed) carry it out."""
    if decision.act:
        ports.guard()
    status = record(decision, spec, status, ports, now)
    return complete(spec, status, ports, now)


def complete(spec: Spec, status: Status, ports: Ports, now: float) -> Status:
    """Finish whatever the status says is under way (``Promoting``/``RollingBack``); else nothing."""
    if status.phase is Phase.PROMOTING:
        return _promote(spec, status, ports, now)
    if status.phase is Phase.ROLLING_BACK:
        return _rollback(spec, status, ports, now)
    return status


def converge(spec: Spec, status: Status, pair: Pair, ports: Ports) -> bool:
    """Make serving match the registry and the status (`k8s.state.desired_serving`). True if changed."""
    want = st.desired_serving(spec, status, pair)
    ports.guard()
    changed = ports.serving.point(want.arms)
    ports.guard()
    return ports.serving.route(want.mode, want.challenger_weight) or changed


def failpoint(name: str) -> None:
    """Crash tests: die here, hard, if ``$KINGMAKER_FAILPOINTS`` names this point."""
    if name in os.environ.get(FAILPOINTS_ENV, "").split(","):
        log.error("failpoint %s: killing the process", name)
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)  # pragma: no cover - the signal arrives


def _evidence_json(status: Status) -> str:
    ev = status.last_evaluation
    text = json.dumps(st.json_safe(ev.evidence) if ev else {}, sort_keys=True, separators=(",", ":"))
    limit = tag_limit()
    if len(text) <= limit:
        return text
    marker = "...(truncated)"
    return text[:limit - len(marker)] + marker


def _decision_tags(prefix: str, status: Status, now: float) -> dict[str, str]:
    ev = status.last_evaluation
    return {f"{prefix}.time": ev.time if ev else st.rfc3339(now),
            f"{prefix}.decision": ev.outcome.value if ev else "",
            f"{prefix}.reason": ev.reason.value if ev else "",
            f"{prefix}.message": (ev.message if ev else "")[:tag_limit()],
            f"{prefix}.evidence": _evidence_json(status)}


def _promote(spec: Spec, status: Status, ports: Ports, now: float) -> Status:
    old, new = status.champion_version, status.challenger_version
    if old is None or new is None:
        raise PermanentError("status says Promoting but does not name both versions")
    reg = ports.registry
    ports.guard()
    aliases = reg.aliases()
    champion_now = aliases.get(spec.champion_alias)
    if champion_now not in (old, new):
        raise PermanentError(f"promotion {old} -> {new} cannot finish: @{spec.champion_alias} now points at version "
                             f"{champion_now}, changed outside the controller")
    if aliases.get(st.PREVIOUS_CHAMPION) != old:
        reg.set_alias(st.PREVIOUS_CHAMPION, old)
    if champion_now != new:
        ports.guard()
        reg.set_alias(spec.champion_alias, new)
    failpoint("after-alias-move")
    challenger_now = aliases.get(spec.challenger_alias)
    if challenger_now == new:
        reg.delete_alias(spec.challenger_alias)
        challenger_now = None
    since = status.last_evaluation.time if status.last_evaluation else st.rfc3339(now)
    reg.tag(new, {**_decision_tags("kingmaker.promotion", status, now), "kingmaker.champion_since": since,
                  "kingmaker.promotion.replaced_version": old})
    reg.tag(old, {**_decision_tags("kingmaker.demotion", status, now), "kingmaker.champion_until": since,
                  "kingmaker.demotion.replaced_by": new})
    done = st.promoted(status, now=now)
    converge(spec, done, Pair(new, challenger_now), ports)
    failpoint("after-re-point")
    ports.store.save(done)
    message = f"version {new} is the champion (was {old}); challenger weight reset"
    log.info("%s: promoted: %s", spec.name, message)
    ports.store.event("Normal", "Promoted", message)
    return done


def _rollback(spec: Spec, status: Status, ports: Ports, now: float) -> Status:
    version = status.challenger_version
    if version is None:
        raise PermanentError("status says RollingBack but names no challenger version")
    ports.guard()
    ports.serving.route(Mode.SPLIT, 0.0)
    ports.registry.tag(version, {**_decision_tags("kingmaker.rollback", status, now),
                                 "kingmaker.rollback.champion_version": status.champion_version or ""})
    done = st.rolled_back(status, now=now)
    ports.store.save(done)
    message = f"challenger version {version} takes no traffic (champion {status.champion_version} stays)"
    log.warning("%s: rolled back: %s", spec.name, message)
    ports.store.event("Warning", "RolledBack", message)
    return done
