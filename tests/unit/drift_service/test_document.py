"""A drift result as drift.json (`kingmaker.drift_result`) and as MLflow metrics: strict JSON that mirrors the result."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np

from drift_service.analysis import ArmReference, Policy, Window, analyse
from drift_service.document import mlflow_metrics, to_document
from drift_service.stats import Correction
from kingmaker.drift_result import FORMAT_VERSION, Context, from_json, to_json
from kingmaker.roles import Arm

from .conftest import log_rows, make_reference, normal_frame

CONTEXT = Context("fraud-detector", "1", None, "/ref", "/log", None, datetime(2026, 3, 2, tzinfo=UTC),
                  datetime(2026, 3, 2, 0, 1, tzinfo=UTC))


def test_document_round_trips_through_strict_json() -> None:
    x = normal_frame(3000, features=3, seed=1)
    x.columns = ["amount", "f/01", "f 02"]
    ref = make_reference(x)
    live = normal_frame(2000, features=3, seed=2, shift={0: 1.0})
    live.columns = x.columns
    live.loc[:9, "f 02"] = np.nan
    result = analyse(Window(log_rows(live), None, None, "m"), ref, [ArmReference(Arm.CHAMPION, "1", ref)],
                     Policy(correction=Correction.BONFERRONI))
    document = to_document(result, CONTEXT)
    doc = json.loads(json.dumps(to_json(document), allow_nan=False))
    assert from_json(doc) == document
    assert doc["format"] == FORMAT_VERSION
    assert doc["context"]["until"] == "2026-03-02T00:00:00+00:00" and doc["context"]["since"] is None
    assert doc["severity"] == result.severity.value == "severe"
    assert doc["drifted_features"] == ["amount"]
    assert doc["policy"]["correction"] == "bonferroni" and doc["policy"]["min_rows"] == 1000
    amount = doc["features"][0]
    assert amount["name"] == "amount" and amount["severity"] == "severe" and amount["drifted"] is True
    assert amount["psi"]["score"] == result.features[0].psi.score  # type: ignore[union-attr]
    assert len(amount["psi"]["bins"]) == len(amount["psi"]["reference_share"]) == 10
    assert amount["ks"]["p_adjusted"] == result.features[0].ks.p_adjusted  # type: ignore[union-attr]
    assert doc["features"][2]["n_missing"] == 10
    assert doc["scores"][0]["arm"] == "champion" and doc["arms"] is None


def test_mlflow_metric_keys_are_safe() -> None:
    x = normal_frame(3000, features=2, seed=3)
    x.columns = ["amount(€)", "f:1"]
    ref = make_reference(x)
    result = analyse(Window(log_rows(normal_frame(2000, features=2, seed=4).set_axis(x.columns, axis=1)),
                            None, None, "m"), ref, [ArmReference(Arm.CHAMPION, "1", ref)], Policy())
    metrics = mlflow_metrics(result)
    assert "psi/amount___" in metrics and "ks_pvalue/f_1" in metrics
    assert metrics["severity_level"] == result.severity.level
    assert metrics["rows"] == 2000
    assert metrics["score_psi/champion"] == result.scores[0].psi.score  # type: ignore[union-attr]
