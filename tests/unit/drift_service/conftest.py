"""Builders for drift tests: references and prediction-log windows as plain frames."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest

from drift_service.analysis import Window
from kingmaker import reference
from kingmaker.logs import feature_column

WindowFactory = Callable[..., Window]


def log_rows(features: pd.DataFrame, *, arm: str | Sequence[str] = "champion", served: bool | Sequence[bool] = True,
             version: str | Sequence[str] = "1", scores: np.ndarray | None = None, start: str = "2026-03-01T00:00Z",
             seconds: float = 3600.0, seed: int = 0, id_prefix: str = "r") -> pd.DataFrame:
    """Prediction-log rows (every column of `kingmaker.logs.prediction_schema`) for ``features``."""
    n = len(features)
    rng = np.random.default_rng(seed)
    ts = pd.Timestamp(start) + pd.to_timedelta(np.sort(rng.uniform(0, seconds, n)), unit="s")
    # naive UTC: `append_predictions` stores it as UTC. (A tz-aware column makes pyarrow call the
    # deprecated tz-dropping `Series.values` under pandas 3.1 -> Pandas4Warning, an error in this tier.)
    ts = ts.tz_convert(None) if ts.tz is not None else ts
    frame = pd.DataFrame({
        "request_id": [f"{id_prefix}{i}" for i in range(n)],
        "ts": ts.astype("datetime64[us]"),
        "routing_key": [f"c{i % 97}" for i in range(n)],
        "arm": np.broadcast_to(np.asarray(arm), n),
        "served": np.broadcast_to(np.asarray(served, dtype=bool), n),
        "mode": "split",
        "model_name": "fraud-detector",
        "model_version": np.broadcast_to(np.asarray(version), n),
        "score": rng.beta(1, 20, n) if scores is None else scores,
        "decision": False,
        "threshold": 0.5,
        "latency_ms": 1.0,
    })
    for name in features.columns:
        frame[feature_column(name)] = features[name].to_numpy()
    return frame


@pytest.fixture
def window_of() -> WindowFactory:
    def make(features: pd.DataFrame, **kwargs: Any) -> Window:
        return Window(frame=log_rows(features, **kwargs), since=None, until=None, source="memory")
    return make


def normal_frame(rows: int, features: int = 6, *, seed: int, shift: dict[int, float] | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, features))
    for i, s in (shift or {}).items():
        x[:, i] += s
    return pd.DataFrame(x, columns=[f"x{i}" for i in range(features)])


def make_reference(frame: pd.DataFrame, *, seed: int = 99, scores: np.ndarray | None = None) -> reference.Reference:
    rng = np.random.default_rng(seed)
    s = rng.beta(1, 20, len(frame)) if scores is None else scores
    return reference.build(frame, s, list(frame.columns))
