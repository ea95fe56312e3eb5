"""`kingmaker retrain`'s pure part: the training set from the logs, the gate window and the gate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kingmaker.errors import PermanentError
from kingmaker.objective import Objective
from training import retrain

T0 = pd.Timestamp("2026-11-01T00:00:00Z")
DAY = 86400.0


def _log(rows: list[tuple[str, float, str, bool, float]]) -> pd.DataFrame:
    """(request_id, hours after T0, arm, served, feature value) -> prediction-log rows."""
    return pd.DataFrame({"request_id": [r[0] for r in rows], "ts": [T0 + pd.Timedelta(hours=r[1]) for r in rows],
                         "arm": [r[2] for r in rows], "served": [r[3] for r in rows],
                         "feat_f01": [r[4] for r in rows], "score": 0.5})


def _labels(rows: list[tuple[str, int, float]]) -> pd.DataFrame:
    """(request_id, label, hours after T0 it arrived)."""
    return pd.DataFrame({"request_id": [r[0] for r in rows], "label": [r[1] for r in rows],
                         "label_ts": [T0 + pd.Timedelta(hours=r[2]) for r in rows]})


def test_one_row_per_transaction_with_the_served_features_and_only_matured_labels() -> None:
    predictions = _log([
        ("a", 0, "challenger", False, 1.0), ("a", 0, "champion", True, 1.0),  # paired: counted once
        ("b", 1, "champion", True, 2.0), ("b", 1, "challenger", False, 2.0),  # shadow
        ("c", 2, "challenger", True, 3.0),  # split, the challenger served it
        ("d", 3, "champion", True, 4.0),  # labelled after the delay: does not count
        ("e", 4, "champion", True, 5.0),  # never labelled
        ("f", 30, "champion", True, 6.0),  # too young at `now`
    ])
    labels = _labels([("a", 1, 5), ("b", 0, 2), ("c", 1, 20), ("d", 1, 3 + 25), ("f", 0, 31)])
    now = (T0 + pd.Timedelta(hours=40)).timestamp()
    served = retrain.served_set(predictions, labels, ["f01"], now=now, label_delay_seconds=DAY)
    assert served.frame["request_id"].tolist() == ["a", "b", "c"]  # time-ordered
    assert served.frame["f01"].tolist() == [1.0, 2.0, 3.0] and served.frame["label"].tolist() == [1, 0, 1]
    assert (served.logged_rows, served.transactions, served.unmatured, served.frauds) == (8, 6, 3, 2)


def test_a_missing_feature_column_is_named_and_empty_logs_give_an_empty_set() -> None:
    with pytest.raises(PermanentError, match="f02"):
        retrain.served_set(_log([("a", 0, "champion", True, 1.0)]), _labels([]), ["f01", "f02"], now=0,
                           label_delay_seconds=DAY)
    empty = retrain.served_set(pd.DataFrame(), pd.DataFrame(), ["f01"], now=0, label_delay_seconds=DAY)
    assert empty.frame.empty and list(empty.frame.columns) == ["request_id", "ts", "label", "f01"]


def test_the_gate_window_is_the_most_recent_share() -> None:
    frame = pd.DataFrame({"ts": range(10)})
    part, window = retrain.split_window(frame, 0.3)
    assert part["ts"].tolist() == list(range(7)) and window["ts"].tolist() == [7, 8, 9]
    with pytest.raises(PermanentError, match="--holdout"):
        retrain.split_window(frame, 1.0)


def test_decision_costs_are_a_review_per_alert_and_the_miss_cost_per_missed_fraud() -> None:
    y = np.array([1, 1, 0, 0], dtype=np.int8)
    costs = retrain.decision_costs(y, np.array([0.9, 0.1, 0.8, 0.2]), 0.5, Objective(review_cost=5.0,
                                                                                      missed_fraud_cost=100.0))
    assert costs.tolist() == [5.0, 100.0, 5.0, 0.0]


def test_the_gate_passes_a_cheaper_candidate_and_rejects_a_costlier_one() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    y = (rng.random(n) < 0.05).astype(np.int8)
    cheap = np.where(y == 1, np.where(rng.random(n) < 0.8, 5.0, 100.0), np.where(rng.random(n) < 0.02, 5.0, 0.0))
    dear = np.where(y == 1, np.where(rng.random(n) < 0.4, 5.0, 100.0), np.where(rng.random(n) < 0.02, 5.0, 0.0))
    better = retrain.gate(y, dear, cheap, margin=0.0, n_boot=300)
    assert better.passed and better.difference < 0 and better.ci_low < better.difference < better.ci_high <= 0
    assert better.difference == pytest.approx(better.candidate_cost - better.champion_cost)
    assert "passes the gate" in better.reason and f"{better.rows} most recent" in better.reason
    worse = retrain.gate(y, cheap, dear, margin=0.0, n_boot=300)
    assert not worse.passed and worse.ci_low > 0 and "fails the gate" in worse.reason
    same = retrain.gate(y, cheap, cheap, margin=0.0, n_boot=50)  # identical: a zero-width interval at 0 passes
    assert same.passed and same.difference == same.ci_low == same.ci_high == 0.0
    assert retrain.gate(y, cheap, dear, margin=worse.ci_high + 1.0, n_boot=300).passed  # within a wide margin
