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
only record. Every decision is also counted (``kingmaker_controller_decisions_total``) and logged.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry

from k8s import state as st
from k8s.decide import Decision, Outcome
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

class ControllerMetrics:
    """The controller's metrics (`kingmaker.catalog.CONTROLLER`) in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        made = {spec.name: create(spec, self.registry) for spec in CONTROLLER}
        self.decisions = made["kingmaker_controller_decisions"]
        self.last = made["kingmaker_controller_last_decision_timestamp_seconds"]
        self.p_value = made["kingmaker_controller_p_value"]
        self.labelled = made["kingmaker_controller_matured_labelled"]
        self.positives = made["kingmaker_controller_matured_positives"]
        self.policy_reloads = made["kingmaker_controller_policy_reloads"]

    def record(self, decision: Decision, now: float) -> None:
        self.decisions.labels(outcome=decision.outcome.value, reason=decision.reason.value).inc()  # type: ignore[union-attr]
        self.last.set(now)  # type: ignore[union-attr]
        ev = decision.evidence
        for test, p in (("better", ev.p_better), ("worse", ev.p_worse)):
            if p is not None:
                self.p_value.labels(test=test).set(p)  # type: ignore[union-attr]
        for arm, evidence in ((Arm.CHAMPION, ev.champion), (Arm.CHALLENGER, ev.challenger)):
            self.labelled.labels(arm=arm.value, model_version=evidence.version).set(evidence.labelled)  # type: ignore[union-attr]
            self.positives.labels(arm=arm.value, model_version=evidence.version).set(evidence.positives)  # type: ignore[union-attr]

    def policy_reloaded(self, outcome: str) -> None:
        """Count a re-read of the local policy file (`k8s.local.PolicyFile`): ``ok`` or ``invalid``."""
        self.policy_reloads.labels(outcome=outcome).inc()  # type: ignore[union-attr]

    def count(self, outcome: str, reason: str) -> float:
        """Current value of the decisions counter (for tests and ``--dry-run``)."""
        value = self.registry.get_sample_value(CATALOG["kingmaker_controller_decisions"].exposed_name,
                                               {"outcome": outcome, "reason": reason})
        return value or 0.0


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
    ports.metrics.record(decision, now)
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
