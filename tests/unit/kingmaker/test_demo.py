"""The demo's pure parts: the time split, the report's numbers and story, and the page itself on small real logs."""

from __future__ import annotations

import argparse
import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from kingmaker import demo, demo_report, logs
from kingmaker.errors import PermanentError
from training.data import Dataset


def _dataset(n: int = 100) -> Dataset:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"Time": rng.permutation(n).astype(float), "V1": rng.standard_normal(n),
                          "Class": (np.arange(n) % 10 == 0).astype(int)})
    return Dataset("t", frame, ("V1",), "Class", "memory", time_column="Time")


def test_the_time_split_trains_on_the_earliest_rows_and_replays_the_latest_in_order() -> None:
    split = demo.time_split(_dataset(), 0.4, None, None, seed=0)
    assert len(split.train.frame) == 60 and len(split.replay) == 40
    assert split.train.frame["Time"].max() < split.replay["Time"].min()
    assert split.replay["Time"].is_monotonic_increasing
    short = demo.time_split(_dataset(), 0.4, 10, None, seed=0)
    assert list(short.replay["Time"]) == list(range(60, 70))  # the first rows of the latest part


def test_the_time_split_refuses_data_without_time_and_a_bad_fraction() -> None:
    ds = _dataset()
    with pytest.raises(PermanentError, match="no time column"):
        demo.time_split(Dataset("t", ds.frame, ("V1",), "Class", "memory"), 0.4, None, None, seed=0)
    with pytest.raises(PermanentError, match="--replay-fraction"):
        demo.time_split(ds, 1.0, None, None, seed=0)


def test_cost_per_1k_counts_reviews_and_missed_frauds() -> None:
    label = np.array([True, True, False, False])
    flagged = np.array([True, False, True, False])
    assert demo_report.cost_per_1k(flagged, label, 5.0, 100.0) == 1000 * (5 * 2 + 100 * 1) / 4
    assert math.isnan(demo_report.cost_per_1k(flagged[:0], label[:0], 5.0, 100.0))


def test_arm_quality_at_its_threshold_and_at_the_matched_alert_rate() -> None:
    label = np.zeros(1000, dtype=int)
    label[:3] = 1
    score = np.linspace(1.0, 0.0, 1000)  # a perfect ranker: the frauds score highest
    decision = score > 0.5  # its own threshold flags half the traffic
    q = demo_report.arm_quality("2", score, decision, label, alert_rate=0.003, review_cost=5.0, missed_cost=100.0)
    assert q.average_precision == pytest.approx(1.0) and q.frauds == 3
    assert q.recall_matched == 1.0 and q.cost_matched == pytest.approx(15.0)  # 3 alerts, all frauds
    assert q.alert_rate_own == pytest.approx(0.5) and q.cost_own == pytest.approx(2500.0, rel=0.01)


def _look(labelled: int, p_better: float | None, outcome: str = "HOLD") -> dict[str, Any]:
    return {"time": f"t{labelled}", "outcome": outcome, "reason": "Inconclusive", "message": "m",
            "evidence": {"challenger": {"labelled": labelled}, "p_better": p_better, "p_worse": 0.5}}


def test_evidence_series_is_the_wealth_per_look_with_a_test() -> None:
    n, better, worse = demo_report.evidence_series([_look(10, None) | {"evidence": {"challenger": {"labelled": 10}}},
                                                    _look(100, 0.5), _look(200, 0.01)])
    assert n == [100, 200] and better == [2.0, 100.0] and worse == [2.0, 2.0]


def _record(decision: dict[str, Any] | None, last: dict[str, Any]) -> dict[str, Any]:
    return {
        "ended": "the data ran out", "mode": "shadow", "weight": 0.1, "champion_version": "1",
        "challenger_version": "2", "candidates": {"1": "logreg", "2": "xgboost"}, "decision": decision,
        "status": {"lastEvaluation": last}, "trace": [_look(100, 0.5), last], "events": [], "missing": [],
        "policy": demo.policy_document(argparse.Namespace(mode="shadow", weight=0.1), 30, 10),
        "policy_why": demo.POLICY_WHY, "guardrails_why": demo.GUARDRAILS_WHY,
        "requests": {"sent": 20, "ok": 20, "failed": 0, "errors": {}, "labels_sent": 20, "label_failures": 0},
        "times": {"began": 0.0, "trained": 1.0, "replay_began": 2.0, "replay_ended": 3.0},
        "data": {"name": "creditcard", "rows": 100, "train_rows": 80, "train_frauds": 4, "replay_rows": 20,
                 "replay_frauds": 2},
        "drift_dir": None, "latency": {"champion v1": {"p50": 0.01, "p95": 0.02, "p99": 0.03}}, "wall_seconds": 9.0,
    }


def test_what_happened_says_whether_the_challenger_was_promoted_and_why() -> None:
    last = _look(200, 0.01, "PROMOTE") | {"reason": "ChallengerBetter", "message": "cost 1.0 lower"}
    promoted = demo_report.what_happened(_record({"action": "Promoted", "time": "2026-01-01T00:00:00Z"}, last), [], {})
    assert "the controller promoted v2" in promoted and "cost 1.0 lower" in promoted
    held = demo_report.what_happened(_record(None, _look(200, 0.4) | {"message": "not enough"}), [], {})
    assert "was not promoted" in held and "not enough" in held and "0 of 20 requests failed" in held


def test_the_report_is_one_self_contained_page(tmp_path: Path) -> None:
    predictions, labels = str(tmp_path / "predictions"), str(tmp_path / "labels")
    start = datetime.now(UTC)
    rng = np.random.default_rng(1)
    n = 400
    y = (np.arange(n) % 20 == 0).astype(int)
    ids = [f"tx-{i}" for i in range(n)]
    frames = []
    for arm, version, separation in (("champion", "1", 0.5), ("challenger", "2", 3.0)):
        score = 1 / (1 + np.exp(-(separation * y + rng.standard_normal(n) - 3)))
        frames.append(pd.DataFrame({
            "request_id": ids, "ts": [start + timedelta(seconds=i / 10) for i in range(n)], "routing_key": ids,
            "arm": arm, "served": arm == "champion", "mode": "shadow", "model_name": "fraud-detector",
            "model_version": version, "score": score, "decision": score > 0.5, "threshold": 0.5, "latency_ms": 2.0,
            "feat_V1": rng.standard_normal(n)}))
    logs.append_predictions(predictions, pd.concat(frames, ignore_index=True), ["V1"])
    logs.append_labels(labels, pd.DataFrame({"request_id": ids, "label": y, "label_ts": [start] * n}))
    record = _record({"action": "Promoted", "time": (start + timedelta(seconds=20)).isoformat()},
                     _look(200, 0.01, "PROMOTE"))
    record["times"]["replay_began"] = start.timestamp()

    page = demo_report.render(record, predictions, labels)
    assert page.startswith("<!doctype html>") and "PROMOTED" in page
    assert page.count('src="data:image/png;base64,') == 3  # requests, PR curves, evidence (no drift result)
    assert not re.search(r"(src|href)=\"(?!data:)", page)
    assert "v2 xgboost (challenger)" in page and "cost/1k at 0.3% alerts" in page
