"""Acting on decisions against a REAL MLflow registry (SQLite in tmp): promotion, rollback, and a crash at each
step of a promotion followed by a second reconcile that must end in the same consistent state."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from k8s import act
from k8s.act import ControllerMetrics, Ports
from k8s.controller import Controller
from k8s.decide import Outcome, Reason
from k8s.resource import Phase
from k8s.sources.registry import MlflowRegistry
from k8s.state import Arms, Pair, Status
from kingmaker.errors import PermanentError, TemporaryError
from kingmaker.roles import Mode

from .conftest import T0, Boom, Fixed, Home, MemoryStore, RecordingServing, sources, spec, traffic_frame

NOW = T0 + 2500 + 3600 + 120


@dataclass
class Journal:
    """Every side effect in order, across the registry, serving and the store."""

    entries: list[tuple[str, Any]] = field(default_factory=list)


class JournalRegistry:
    def __init__(self, inner: MlflowRegistry, journal: Journal, fail_on: set[str] | None = None):
        self.inner, self.journal, self.fail_on = inner, journal, fail_on or set()

    def aliases(self) -> dict[str, str]:
        return self.inner.aliases()

    def set_alias(self, alias: str, version: str) -> None:
        if f"set_alias:{alias}" in self.fail_on:
            raise Boom(f"crash before @{alias} moved")
        self.inner.set_alias(alias, version)
        self.journal.entries.append(("set_alias", (alias, version)))

    def delete_alias(self, alias: str) -> None:
        self.inner.delete_alias(alias)
        self.journal.entries.append(("delete_alias", alias))

    def tag(self, version: str, tags: Mapping[str, str]) -> None:
        if "tag" in self.fail_on:
            raise Boom("crash while tagging")
        self.inner.tag(version, tags)
        self.journal.entries.append(("tag", version))


class JournalStore(MemoryStore):
    journal: Journal
    fail_on_phase: Phase | None = None

    def save(self, status: Status) -> None:
        if status.phase is self.fail_on_phase:
            raise Boom(f"crash before saving {status.phase.value}")
        super().save(status)
        self.journal.entries.append(("save", status.phase))


def setup(home: Home, registry: MlflowRegistry, *, separations: tuple[float, float] = (1.0, 3.5),
          fail: set[str] | None = None, fail_phase: Phase | None = None,
          challenger: str = "2") -> tuple[Controller, Journal, JournalStore, RecordingServing]:
    if not home.root.joinpath("logs").exists():
        preds, labels = traffic_frame(2500, champion="1", challenger=challenger, separations=separations)
        home.write(preds, labels)
    journal = Journal()
    store = JournalStore(spec())
    store.journal, store.fail_on_phase = journal, fail_phase
    fail = fail or set()

    def fail_when(call: str, arg: Any) -> bool:  # only the promotion's own re-pointing / weight reset
        return (f"serving:{call}" in fail and
                (arg.champion == "2" if call == "point" else arg == (Mode.SPLIT, 0.0)))

    serving = RecordingServing(fail_when=fail_when)
    ports = Ports(JournalRegistry(registry, journal, fail), serving, store, ControllerMetrics())
    return Controller(store, ports, sources(home), clock=lambda: NOW), journal, store, serving


def assert_promoted(registry: MlflowRegistry, store: MemoryStore, serving: RecordingServing) -> None:
    """The one consistent end state of promoting v2 over v1."""
    assert registry.aliases() == {"champion": "2", "previous-champion": "1"}
    new, old = registry.version_tags("2"), registry.version_tags("1")
    assert new["kingmaker.promotion.decision"] == "PROMOTE"
    assert new["kingmaker.promotion.reason"] == "ChallengerBetter"
    assert new["kingmaker.promotion.replaced_version"] == "1" and old["kingmaker.demotion.replaced_by"] == "2"
    assert new["kingmaker.champion_since"] == old["kingmaker.champion_until"] == new["kingmaker.promotion.time"]
    status = store.current
    assert status.phase is Phase.PROMOTED and (status.champion_version, status.challenger_version) == ("2", None)
    assert [h["action"] for h in status.history] == ["Promoted"]
    assert status.last_evaluation is not None
    assert json.loads(new["kingmaker.promotion.evidence"]) == json.loads(json.dumps(status.last_evaluation.evidence))
    assert json.loads(old["kingmaker.demotion.evidence"])["challenger"]["version"] == "2"
    assert serving.arms == Arms("2", None) and (serving.mode, serving.weight) == (Mode.SPLIT, 0.0)


def test_promotion_saves_the_intent_before_any_side_effect(home: Home, registry: MlflowRegistry) -> None:
    controller, journal, store, serving = setup(home, registry)
    result = controller.reconcile()
    assert result.decision is not None and result.decision.reason is Reason.CHALLENGER_BETTER
    assert_promoted(registry, store, serving)
    effects = [e for e in journal.entries if e[0] != "save" or e[1] is not Phase.EVALUATING]
    assert effects[0] == ("save", Phase.PROMOTING)  # the intent, before MLflow is touched
    first_alias = next(i for i, e in enumerate(journal.entries) if e[0] == "set_alias")
    assert journal.entries.index(("save", Phase.PROMOTING)) < first_alias
    assert journal.entries[-1] == ("save", Phase.PROMOTED)
    assert ("set_alias", ("previous-champion", "1")) in journal.entries
    assert journal.entries.index(("set_alias", ("previous-champion", "1"))) < \
        journal.entries.index(("set_alias", ("champion", "2")))
    assert controller.ports.metrics.count("PROMOTE", "ChallengerBetter") == 1
    assert [e[1] for e in store.events] == ["ChallengerBetter", "Promoted"]


@pytest.mark.parametrize(("fail", "fail_phase", "where"), [
    ({"set_alias:champion"}, None, "after the intent, before the champion alias moved"),
    ({"serving:point"}, None, "after the alias move, before the arms were re-pointed"),
    ({"serving:route"}, None, "after re-pointing the arms, before the weight reset"),
    ({"tag"}, None, "while tagging"),
    (set(), Phase.PROMOTED, "after everything but the final status"),
])
def test_a_crash_anywhere_in_a_promotion_is_finished_by_the_next_reconcile(
        home: Home, registry: MlflowRegistry, fail: set[str], fail_phase: Phase | None, where: str) -> None:
    crashing, _, store, _ = setup(home, registry, fail=fail, fail_phase=fail_phase)
    with pytest.raises(Boom):
        crashing.reconcile()
    assert store.current.phase is Phase.PROMOTING, where
    # a new process: fresh ports, the persisted status, the same registry
    journal = Journal()
    fresh_store = JournalStore(store.spec, current=store.current)
    fresh_store.journal = journal
    serving = RecordingServing()
    ports = Ports(JournalRegistry(registry, journal), serving, fresh_store, ControllerMetrics())
    result = Controller(fresh_store, ports, sources(home), clock=lambda: NOW + 60).reconcile()
    assert result.resumed and result.decision is None  # finished, not decided again
    assert ports.metrics.count("PROMOTE", "ChallengerBetter") == 0
    assert_promoted(registry, fresh_store, serving)
    # and once more: nothing left to do, nothing changes
    journal.entries.clear()
    again = Controller(fresh_store, ports, sources(home), clock=lambda: NOW + 120).reconcile()
    assert again.decision is None and again.status == fresh_store.current
    assert [e for e in journal.entries if e[0] in ("set_alias", "delete_alias", "tag")] == []
    assert_promoted(registry, fresh_store, serving)


def test_a_champion_moved_by_someone_else_stops_the_promotion(home: Home, registry: MlflowRegistry) -> None:
    crashing, _, store, _ = setup(home, registry, fail={"set_alias:champion"})
    with pytest.raises(Boom):
        crashing.reconcile()
    registry.set_alias("champion", "3")  # a human intervened
    controller, _, _, _serving = setup(home, registry)
    controller.resource = controller.ports.store = store  # type: ignore[misc]
    with pytest.raises(PermanentError, match="changed outside the controller"):
        controller.reconcile()
    assert controller.run_once() is None
    assert store.current.phase is Phase.ERROR
    assert registry.aliases()["champion"] == "3"
    assert store.events[-1][:2] == ("Warning", "ReconcileFailed")


def test_a_newer_challenger_registered_meanwhile_is_kept(home: Home, registry: MlflowRegistry) -> None:
    crashing, _, store, _ = setup(home, registry, fail={"serving:point"})
    with pytest.raises(Boom):
        crashing.reconcile()
    registry.set_alias("challenger", "3")
    controller, _, _, serving = setup(home, registry)
    controller.resource = controller.ports.store = store  # type: ignore[misc]
    controller.reconcile()
    assert registry.aliases() == {"champion": "2", "previous-champion": "1", "challenger": "3"}
    assert serving.arms == Arms("2", "3") and (serving.mode, serving.weight) == (Mode.SHADOW, 0.1)
    assert store.current.phase is Phase.PROMOTED


def test_rollback_takes_the_challenger_out_and_tags_it(home: Home, registry: MlflowRegistry) -> None:
    controller, journal, store, serving = setup(home, registry, separations=(3.5, 1.0))
    result = controller.reconcile()
    assert result.decision is not None and result.decision.outcome is Outcome.ROLLBACK
    assert registry.aliases() == {"champion": "1", "challenger": "2"}  # the registry keeps its aliases
    tags = registry.version_tags("2")
    assert tags["kingmaker.rollback.reason"] == "ChallengerWorse" and tags["kingmaker.rollback.champion_version"] == "1"
    assert (serving.mode, serving.weight) == (Mode.SPLIT, 0.0)
    assert store.current.phase is Phase.ROLLED_BACK and store.current.history[-1]["action"] == "RolledBack"
    assert journal.entries.index(("save", Phase.ROLLING_BACK)) < journal.entries.index(("tag", "2"))
    # the rolled-back version is not evaluated again; its weight stays 0
    again = controller.reconcile()
    assert again.decision is None and (serving.mode, serving.weight) == (Mode.SPLIT, 0.0)
    assert controller.ports.metrics.count("ROLLBACK", "ChallengerWorse") == 1
    # a new challenger starts a new experiment with its share of traffic
    registry.set_alias("challenger", "3")
    fresh = controller.reconcile()
    assert fresh.decision is not None and fresh.decision.reason is Reason.INSUFFICIENT_SAMPLES
    assert serving.arms == Arms("1", "3") and serving.weight == 0.1
    assert store.current.phase is Phase.EVALUATING and store.current.looks == 1


def test_hold_records_only(home: Home, registry: MlflowRegistry) -> None:
    controller, journal, store, _serving = setup(home, registry, separations=(2.5, 2.5))
    result = controller.reconcile()
    assert result.decision is not None and result.decision.outcome is Outcome.HOLD
    assert [e for e in journal.entries if e[0] != "save"] == []
    assert registry.aliases() == {"champion": "1", "challenger": "2"}
    assert registry.version_tags("2").get("kingmaker.promotion.decision") is None
    assert store.current.phase is Phase.EVALUATING and store.current.looks == 1
    controller.reconcile()
    assert store.current.looks == 2  # the sequential test's look count survives between reconciles


def test_missing_guardrails_hold_a_winner(home: Home, registry: MlflowRegistry) -> None:
    from k8s.decide import GuardrailReadings

    controller, _journal, _store, _ = setup(home, registry)
    unreadable = Fixed(guard=GuardrailReadings())
    controller.sources = sources(home, unreadable)
    result = controller.reconcile()
    assert result.decision is not None and result.decision.reason is Reason.GUARDRAIL_UNAVAILABLE
    assert registry.aliases()["champion"] == "1"


def test_evidence_is_cut_to_the_tag_limit(home: Home, registry: MlflowRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(act, "TAG_LIMIT", 200)
    controller, _, _, _ = setup(home, registry)
    controller.reconcile()
    evidence = registry.version_tags("2")["kingmaker.promotion.evidence"]
    assert len(evidence) == 200 and evidence.endswith("...(truncated)")


def test_no_challenger_means_nothing_to_decide(home: Home, registry: MlflowRegistry) -> None:
    registry.delete_alias("challenger")
    controller, _journal, store, serving = setup(home, registry)
    result = controller.reconcile()
    assert result.decision is None and registry.aliases() == {"champion": "1"}
    assert serving.arms == Arms("1", None) and serving.weight == 0.0
    assert (store.current.champion_version, store.current.challenger_version) == ("1", None)


def test_a_registry_without_champion_is_a_permanent_error(home: Home, registry: MlflowRegistry) -> None:
    registry.delete_alias("champion")
    controller, _, store, _ = setup(home, registry)
    assert controller.run_once() is None
    assert store.current.phase is Phase.ERROR
    ready = next(c for c in store.current.conditions if c["type"] == "Ready")
    assert "no @champion" in ready["message"]


def test_current_pair_ignores_a_challenger_alias_on_the_champion(registry: MlflowRegistry) -> None:
    registry.set_alias("challenger", "1")
    assert act.current_pair(registry, spec()) == Pair("1", None)


def test_empty_logs_hold_for_samples(home: Home, registry: MlflowRegistry) -> None:
    home.root.joinpath("logs").mkdir()  # no traffic logged yet
    controller, _, store, _ = setup(home, registry)
    result = controller.reconcile()
    assert result.decision is not None and result.decision.reason is Reason.INSUFFICIENT_SAMPLES
    assert store.current.phase is Phase.EVALUATING


class DownRegistry(JournalRegistry):
    """The registry unreachable while ``down`` (what `MlflowRegistry` raises then: a `TemporaryError`)."""

    down = True

    def aliases(self) -> dict[str, str]:
        if self.down:
            raise TemporaryError("MLflow: get registered model fraud-detector: connection refused")
        return super().aliases()


def test_a_registry_outage_holds_with_the_reason_and_the_next_reconcile_completes(
        home: Home, registry: MlflowRegistry) -> None:
    controller, journal, store, _ = setup(home, registry)  # evidence that promotes v2
    down = DownRegistry(registry, journal)
    controller.ports = replace(controller.ports, registry=down)
    before = store.current.phase
    for _ in range(2):
        assert controller.run_once() is None
    assert registry.aliases() == {"champion": "1", "challenger": "2"}  # neither promoted nor rolled back
    assert store.current.phase is before and [e for e in journal.entries if e[0] != "save"] == []
    held = next(c for c in store.current.conditions if c["type"] == "Reachable")
    assert (held["status"], held["reason"]) == ("False", "TemporaryError")
    assert "connection refused" in held["message"]
    assert len(store.saved) == 1 and [e[1] for e in store.events] == ["DependencyUnavailable"]  # once, not per tick

    down.down = False
    result = controller.run_once()
    assert result is not None and result.decision is not None and result.decision.outcome is Outcome.PROMOTE
    assert registry.aliases() == {"champion": "2", "previous-champion": "1"}
    back = next(c for c in store.current.conditions if c["type"] == "Reachable")
    assert (back["status"], back["reason"]) == ("True", "Reachable")
    assert store.current.phase is Phase.PROMOTED
