"""The reconcile loop — observe -> decide -> act — shared by local and Kubernetes mode.

One reconcile of one resource:

1. load the spec and status; if the status says a swap is under way (``Promoting``/``RollingBack``),
   finish it (`k8s.act.complete`) and stop there — an interrupted promotion is resumed, never re-decided;
2. read the pair from the registry aliases and make serving follow it (`k8s.act.converge`);
3. no challenger, or one already rolled back: nothing to decide;
4. `evaluate` = `k8s.observe.observe` + `k8s.decide.decide`;
5. `k8s.act.act`.

`Controller.run_once` wraps it: a `TemporaryError` (MLflow, the logs or the API server unreachable) is
logged and retried at the next tick, the resource held where it is (condition ``Reachable=False`` with the
reason, phase unchanged: nothing is promoted or rolled back) until a reconcile succeeds again; a
`PermanentError` puts the resource in phase ``Error`` with the
message; neither escapes the loop. Every reconcile is counted by result, with the phase it leaves, and
the loops report whether this process leads (`k8s.act.ControllerMetrics`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from k8s import act
from k8s import state as st
from k8s.act import ControllerMetrics, LostLeadership, Ports, ReconcileResult
from k8s.decide import Decision, decide
from k8s.observe import Sources, observe
from k8s.state import Pair, Spec, Status
from kingmaker.errors import KingmakerError, PermanentError, TemporaryError

log = logging.getLogger(__name__)


class ResourceSource(Protocol):
    @property
    def name(self) -> str:
        """The resource's name (``metadata.name``)."""
        ...

    def load(self) -> tuple[Spec, Status]:
        """The resource's spec (validated; raises `PermanentError`) and status, freshly read."""
        ...

    def status(self) -> Status:
        """The status alone (to record an error when the spec cannot be read)."""
        ...


@dataclass(frozen=True)
class Result:
    status: Status
    decision: Decision | None = None  # None: resumed a swap, or nothing to decide
    resumed: bool = False


@dataclass
class Controller:
    resource: ResourceSource
    ports: Ports
    sources: Sources
    clock: Callable[[], float] = field(default=time.time)

    def evaluate(self, spec: Spec, status: Status, pair: Pair, now: float) -> Decision:
        """Observe and decide; no side effects (this is all ``--dry-run`` does)."""
        observations = observe(self.sources, spec, pair, now)
        return decide(observations, spec.policy, status.state(spec.approved_challenger_version))

    def reconcile(self) -> Result:
        spec, status = self.resource.load()
        now = self.clock()
        if status.phase in st.UNFINISHED:
            log.info("%s: resuming an interrupted %s (%s -> %s)", spec.name, status.phase.value,
                     status.champion_version, status.challenger_version)
            return Result(act.complete(spec, status, self.ports, now), resumed=True)
        pair = act.current_pair(self.ports.registry, spec)
        act.converge(spec, status, pair, self.ports)
        if pair.challenger is None or st.retired(status, pair):
            return Result(self._settle(spec, status, pair, now))
        decision = self.evaluate(spec, status, pair, now)
        return Result(act.act(decision, spec, status, self.ports, now), decision)

    def _settle(self, spec: Spec, status: Status, pair: Pair, now: float) -> Status:
        settled = st.settled(status, pair, now=now)
        if settled != status:
            self.ports.store.save(settled)
        log.info("%s: champion v%s, %s: nothing to evaluate", spec.name, pair.champion,
                 "no challenger" if pair.challenger is None else f"challenger v{pair.challenger} was rolled back")
        return settled

    def run_once(self) -> Result | None:
        """`reconcile`, with errors turned into log lines (temporary) or phase ``Error`` (permanent)."""
        result: Result | None = None
        status: Status | None = None
        try:
            result = self.reconcile()
            outcome, status = ReconcileResult.OK, result.status
            if not st.reachable(status):
                status = self._save(st.reached(status, now=self.clock()))
                log.info("%s: the registry, the logs and the API server answer again", self.resource.name)
                result = replace(result, status=status)
        except LostLeadership as exc:
            log.warning("not acting: %s", exc)
            outcome = ReconcileResult.NOT_LEADER
        except TemporaryError as exc:
            log.warning("reconcile failed, holding (no promotion, no rollback) until it succeeds: %s", exc)
            outcome, status = ReconcileResult.TEMPORARY_ERROR, self._record_unreachable(str(exc))
        except PermanentError as exc:
            log.error("reconcile failed: %s", exc)
            outcome, status = ReconcileResult.PERMANENT_ERROR, self._record_failure(str(exc))
        self.ports.metrics.reconciled(self.resource.name, outcome, status, self.clock())
        return result

    def _save(self, status: Status) -> Status:
        self.ports.guard()
        self.ports.store.save(status)
        return status

    def _record_unreachable(self, message: str) -> Status | None:
        """Condition ``Reachable=False`` with ``message`` (saved when it changes; the phase stays: a hold), or
        None when the status cannot be read or written either (the API server may be what is down)."""
        try:
            status = self.resource.status()
            held = st.unreachable(status, message, now=self.clock())
            if held.conditions != status.conditions:
                self._save(held)
                if st.reachable(status):
                    self.ports.store.event("Warning", "DependencyUnavailable", message)
            return held
        except KingmakerError as exc:
            log.warning("could not record the hold in the status: %s", exc)
            return None

    def _record_failure(self, message: str) -> Status | None:
        """Phase ``Error`` with ``message``; returns the status saved (None if it could not be)."""
        try:
            status = self.resource.status()
            failed = st.failed(status, message, now=self.clock())
            if failed != status:
                self.ports.guard()
                self.ports.store.save(failed)
                self.ports.store.event("Warning", "ReconcileFailed", message)
            return failed
        except KingmakerError as exc:
            log.error("could not record the failure in the status: %s", exc)
            return None


def loop(controller: Controller, interval: Callable[[], float], stop: threading.Event) -> None:
    """Reconcile every ``interval()`` seconds until ``stop``.

    Each reconcile loads the spec afresh (`ResourceSource.load`: the API server, or the local policy file when
    it changed, `k8s.local.PolicyFile`) and ``interval()`` is asked again after each, so an edited policy
    applies from the next look on. The caller holds the resource's lock: this process leads while the loop runs.
    """
    controller.ports.metrics.leading(True)
    try:
        while not stop.is_set():
            started = time.monotonic()
            controller.run_once()
            stop.wait(max(0.0, interval() - (time.monotonic() - started)))
    finally:
        controller.ports.metrics.leading(False)


# --- Kubernetes: every ChampionChallenger in the namespace -------------------------------------

@dataclass
class _Tracked:
    next_due: float = 0.0
    last_run: float = float("-inf")
    generation: int | None = None


class Elector(Protocol):
    @property
    def leading(self) -> bool: ...


class ResourceFeed(Protocol):
    """The namespace's resources as a cache that says when it changed (`k8s.watch.ResourceWatch`)."""

    def resources(self) -> Iterable[Mapping[str, Any]]:
        """The resources as last seen; no API call."""
        ...

    def wait(self, timeout: float) -> bool:
        """Block until the resources changed or ``timeout`` seconds passed. True if a change woke it."""
        ...


def _interval(doc: Mapping[str, Any], default: float) -> float:
    """The resource's ``evaluationIntervalSeconds`` (validated by `k8s.policy.parse_policy`); ``default`` when
    the spec is invalid (its reconcile reports why)."""
    try:
        return float(st.parse_spec(doc).policy.evaluation_interval_seconds)
    except PermanentError:
        return default


def operate(feed: ResourceFeed, controller_for: Callable[[Mapping[str, Any]], Controller], elector: Elector,
            stop: threading.Event, *, tick: float = 10.0, default_interval: float = 300.0,
            clock: Callable[[], float] = time.monotonic, metrics: ControllerMetrics | None = None) -> None:
    """While leading, reconcile each resource of ``feed``: at once when it is new or its spec changed
    (``metadata.generation``: an approval, a traffic or policy edit), every evaluation interval, and every
    ``tick`` seconds while a swap is under way (``Promoting``/``RollingBack``).

    Between rounds it sleeps until the feed reports a change, the next resource is due, or ``tick`` passes
    (when leadership is looked at again). Reports leadership and drops the series of resources that are gone
    to ``metrics``. Whoever sets ``stop`` wakes the feed too.
    """
    tracked: dict[str, _Tracked] = {}
    unfinished = {p.value for p in st.UNFINISHED}
    while not stop.is_set():
        leading = elector.leading
        if metrics is not None:
            metrics.leading(leading)
        delay = tick
        if leading:
            docs = list(feed.resources())
            now = clock()
            for doc in docs:
                meta = doc.get("metadata") or {}
                t = tracked.setdefault(str(meta.get("name")), _Tracked())
                busy = (doc.get("status") or {}).get("phase") in unfinished
                if meta.get("generation") != t.generation or now >= t.next_due or (busy and now >= t.last_run + tick):
                    t.generation, t.last_run = meta.get("generation"), now
                    t.next_due = now + _interval(doc, default_interval)
                    controller_for(doc).run_once()
                    if not elector.leading:
                        break
                delay = min(delay, max(0.0, t.next_due - clock()))
            for gone in set(tracked) - {str((d.get("metadata") or {}).get("name")) for d in docs}:
                tracked.pop(gone, None)
                if metrics is not None:
                    metrics.forget(gone)
        else:
            tracked.clear()  # on taking over, every resource is looked at at once
        if not stop.is_set():
            feed.wait(delay)
