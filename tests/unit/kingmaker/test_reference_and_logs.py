from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kingmaker import logs, reference
from kingmaker.roles import Arm, Mode


def test_quantile_edges_by_hand() -> None:
    # deciles of 1..10 (linear interpolation): 1.9, 2.8, ..., 9.1
    assert reference.quantile_edges(np.arange(1, 11), 10) == pytest.approx([1.9, 2.8, 3.7, 4.6, 5.5, 6.4, 7.3, 8.2, 9.1])
    # a discrete feature: repeated quantiles merge, NaN/inf ignored
    assert reference.quantile_edges([0, 0, 0, 0, 1, 1, np.nan, np.inf], 4) == [0.0, 0.75]  # positions 1.25, 2.5, 3.75 of 0,0,0,0,1,1
    assert reference.quantile_edges([np.nan], 10) == []
    with pytest.raises(ValueError):
        reference.quantile_edges([1, 2], 1)


def test_reference_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=500), "b": rng.integers(0, 3, 500).astype(float)})
    ref = reference.build(x, rng.random(500), ["a", "b"], n_bins=5)
    loaded = reference.load(reference.save(ref, tmp_path / "ref"))
    assert loaded.features == ("a", "b") and loaded.n_bins == 5
    pd.testing.assert_frame_equal(loaded.sample, ref.sample)
    assert loaded.edges == ref.edges and len(loaded.edges["a"]) == 4 and len(loaded.edges["b"]) <= 3  # 3 distinct values
    # each reference bin of a continuous feature holds ~1/n of the reference
    counts = np.bincount(np.searchsorted(loaded.edges["a"], x["a"], side="right"), minlength=5)
    assert counts.tolist() == [100] * 5


def _rows(n: int, start: datetime) -> pd.DataFrame:
    return pd.DataFrame({
        "request_id": [f"r{i}" for i in range(n)], "ts": [start + timedelta(hours=i) for i in range(n)],
        "routing_key": "c1", "arm": "champion", "served": True, "mode": "split", "model_name": "fraud-detector",
        "model_version": "1", "score": 0.5, "decision": False, "threshold": 0.7, "latency_ms": 1.0,
        "feat_amount": np.arange(n, dtype=float),
    })


def test_prediction_log_appends_by_date_and_reads_windows(tmp_path: Path) -> None:
    url = str(tmp_path / "predictions")
    start = datetime(2026, 11, 25, 20, tzinfo=UTC)
    assert logs.append_predictions(url, _rows(10, start), ["amount"]) == 10  # spans two dates
    assert logs.append_predictions(url, _rows(3, start + timedelta(days=3)), ["amount"]) == 3
    assert sorted(p.name for p in (tmp_path / "predictions").iterdir()) == ["date=2026-11-25", "date=2026-11-26",
                                                                            "date=2026-11-28"]
    assert len(logs.read_predictions(url)) == 13
    window = logs.read_predictions(url, since=start + timedelta(hours=2), until=start + timedelta(hours=5))
    assert sorted(window["request_id"]) == ["r2", "r3", "r4"]
    assert logs.read_predictions(str(tmp_path / "nothing")).empty


def test_prediction_row_has_the_schema_columns_and_its_features_come_back(tmp_path: Path) -> None:
    ts = datetime(2026, 11, 25, 20, tzinfo=UTC)
    row = logs.prediction_row(request_id="r1", ts=ts, routing_key="c1", arm=Arm.CHALLENGER, served=False,
                              mode=Mode.SHADOW, model_name="fraud-detector", model_version="3", score=0.25,
                              decision=False, threshold=0.5, latency_ms=1.5, features={"amount": 12, "V1": -0.5})
    assert list(row)[:len(logs.PREDICTION_FIELDS)] == [f.name for f in logs.PREDICTION_FIELDS]
    assert (row["arm"], row["mode"], row["feat_amount"], row["feat_V1"]) == ("challenger", "shadow", 12.0, -0.5)
    assert type(row["feat_amount"]) is float
    assert logs.feature_names(row) == ["amount", "V1"]
    url = str(tmp_path / "predictions")
    assert logs.append_predictions(url, [row], logs.feature_names(row)) == 1
    frame = logs.read_predictions(url)
    assert logs.feature_names(frame.columns) == ["amount", "V1"]
    assert frame.iloc[0].to_dict() == {**row, "ts": pd.Timestamp(ts)}


def test_prediction_log_rejects_rows_missing_required_columns(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="score"):
        logs.append_predictions(str(tmp_path), _rows(2, datetime.now(UTC)).drop(columns="score"), ["amount"])


def test_latest_label_wins(tmp_path: Path) -> None:
    url = str(tmp_path / "labels")
    t = datetime(2026, 11, 26, tzinfo=UTC)
    logs.append_labels(url, [{"request_id": "a", "label": 0, "label_ts": t}, {"request_id": "b", "label": 1, "label_ts": t}])
    logs.append_labels(url, [{"request_id": "a", "label": 1, "label_ts": t + timedelta(days=1)}])
    labels = logs.read_labels(url).set_index("request_id")["label"].to_dict()
    assert labels == {"a": 1, "b": 1}
