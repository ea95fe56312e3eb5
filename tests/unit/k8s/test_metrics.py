"""The controller's metrics after real reconciles (real MLflow registry, real logs): the evidence of each decision,
the phase and versions, reconciles by result, leadership, and series that do not outlive what they describe."""

from __future__ import annotations

import math
from dataclasses import replace

from k8s.act import ControllerMetrics, Ports
from k8s.controller import Controller
from k8s.decide import OUTCOME_OF, GuardrailReadings
from k8s.resource import Phase
from k8s.sources.registry import MlflowRegistry
from k8s.state import Pair
from kingmaker.errors import TemporaryError

from .conftest import MODEL, T0, Fixed, Home, MemoryStore, RecordingServing, sources, spec, traffic_frame

NOW = T0 + 2500 + 3600 + 120


def samples(metrics: ControllerMetrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of metric family ``name`` (without the ``kingmaker_controller_`` prefix): labels -> value."""
    full = ControllerMetrics.PREFIX + name
    return {tuple(sorted(s.labels.items())): s.value for family in metrics.registry.collect()
            for s in family.samples if s.name in (full, full + "_total")}


def value(metrics: ControllerMetrics, name: str, **labels: str) -> float | None:
    return samples(metrics, name).get(tuple(sorted({"championchallenger": MODEL, **labels}.items())))


def controller(home: Home, registry: MlflowRegistry, separations: tuple[float, float] = (1.0, 3.5),
               fixed: Fixed | None = None) -> Controller:
    preds, labels = traffic_frame(2500, champion="1", challenger="2", separations=separations)
    home.write(preds, labels)
    store = MemoryStore(spec())
    return Controller(store, Ports(registry, RecordingServing(), store, ControllerMetrics()), sources(home, fixed),
                      clock=lambda: NOW)


def test_a_promotion_exports_its_evidence_phase_and_versions(home: Home, registry: MlflowRegistry) -> None:
    c = controller(home, registry)
    result = c.run_once()
    assert result is not None and result.status.phase is Phase.PROMOTED
    m = c.ports.metrics
    # every outcome/reason exists from the first decision on, so a first increment is seen as one
    decisions = samples(m, "decisions")
    assert len(decisions) == len(OUTCOME_OF) and sum(decisions.values()) == 1
    assert value(m, "decisions", outcome="PROMOTE", reason="ChallengerBetter") == 1
    # the evidence: 1/p crossed the bar 1/alpha; the difference lies inside its confidence sequence
    p_better, alpha = value(m, "p_value", test="better"), value(m, "alpha")
    assert p_better is not None and alpha == 0.05 and 1 / p_better >= 1 / alpha
    lo, est, hi = (value(m, "criterion_difference", criterion="expected-cost", bound=b)
                   for b in ("lower", "estimate", "upper"))
    assert lo is not None and est is not None and hi is not None and lo <= est <= hi < 0  # challenger cheaper
    # labels matured against the gates, per arm and version
    for arm, version in (("champion", "1"), ("challenger", "2")):
        labelled = value(m, "matured_labelled", arm=arm, model_version=version)
        assert labelled is not None and labelled >= value(m, "min_matured_labelled") == 500  # type: ignore[operator]
    assert value(m, "min_matured_positives") == 10
    assert value(m, "guardrail_limit", guardrail="error_rate") == 0.01
    assert value(m, "guardrail_reading", guardrail="error_rate") == 0.001
    assert value(m, "guardrail_reading", guardrail="score_psi") == 0.02
    # the status after the swap: phase Promoted (one of the closed set), v2 the champion, no challenger
    assert {dict(k)["phase"]: v for k, v in samples(m, "phase").items()} == \
        {p.value: float(p is Phase.PROMOTED) for p in Phase}
    assert samples(m, "model_version_info") == {
        (("championchallenger", MODEL), ("model_version", "2"), ("role", "champion")): 1.0}
    assert value(m, "reconciles", result="ok") == 1 and value(m, "reconciles", result="temporary_error") == 0
    assert value(m, "last_reconcile_timestamp_seconds") == NOW
    assert value(m, "evaluation_interval_seconds") == 300


def test_series_of_a_replaced_version_go_away(home: Home, registry: MlflowRegistry) -> None:
    c = controller(home, registry, separations=(3.5, 1.0))
    c.run_once()  # the challenger is worse: rolled back
    m = c.ports.metrics
    assert value(m, "decisions", outcome="ROLLBACK", reason="ChallengerWorse") == 1
    assert value(m, "matured_labelled", arm="challenger", model_version="2") is not None
    registry.set_alias("challenger", "3")  # a new experiment, no traffic yet: HOLD
    c.run_once()
    assert value(m, "decisions", outcome="HOLD", reason="InsufficientSamples") == 1
    labelled = samples(m, "matured_labelled")
    assert {dict(k)["model_version"] for k in labelled} == {"1", "3"}  # v2's series are gone
    assert value(m, "p_value", test="better") is None  # no test ran on this pair
    assert {dict(k)["model_version"] for k in samples(m, "model_version_info")} == {"1", "3"}


def test_a_failed_reconcile_is_counted_and_keeps_the_last_good_time(home: Home, registry: MlflowRegistry) -> None:
    c = controller(home, registry)

    class Down:
        def readings(self, pair: Pair) -> GuardrailReadings:
            raise TemporaryError("Prometheus down")

    c.run_once()
    c.sources = replace(c.sources, guardrails=Down())
    registry.set_alias("challenger", "3")
    c.clock = lambda: NOW + 60
    assert c.run_once() is None
    m = c.ports.metrics
    assert value(m, "reconciles", result="temporary_error") == 1
    assert value(m, "last_reconcile_timestamp_seconds") == NOW


def test_only_the_leader_reports_resources(home: Home, registry: MlflowRegistry) -> None:
    c = controller(home, registry)
    m = c.ports.metrics
    m.leading(True)
    c.run_once()
    assert samples(m, "leader") == {(): 1.0}
    assert math.isclose(sum(samples(m, "decisions").values()), 1)
    m.leading(False)  # another replica took the Lease: it reports from now on
    assert samples(m, "leader") == {(): 0.0}
    assert list({**samples(m, "phase"), **samples(m, "decisions"), **samples(m, "reconciles")}) == []
