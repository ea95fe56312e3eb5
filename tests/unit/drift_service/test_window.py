"""Loading the window from a real Parquet prediction log written with `append_predictions`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from drift_service.window import load, parse_duration
from kingmaker.errors import PermanentError
from kingmaker.logs import append_predictions

from .conftest import log_rows, normal_frame

FEATURES = ["x0", "x1"]


def _log(tmp_path: Path) -> str:
    """Day 1: 100 served rows over 10:00-11:00; day 2: 60 served + 60 shadow rows over 00:00-01:00."""
    url = str(tmp_path / "predictions")
    x = normal_frame(100, features=2, seed=1)
    append_predictions(url, log_rows(x, start="2026-03-01T10:00Z", id_prefix="d1-"), FEATURES)
    y = normal_frame(60, features=2, seed=2)
    served = log_rows(y, start="2026-03-02T00:00Z", id_prefix="d2-", seed=3)
    shadow = served.assign(arm="challenger", served=False, model_version="2",
                           ts=served["ts"] + pd.Timedelta(milliseconds=3))
    append_predictions(url, pd.concat([served, shadow]), FEATURES)
    return url


def test_time_window_is_half_open(tmp_path: Path) -> None:
    url = _log(tmp_path)
    whole = load(url, FEATURES, until=datetime(2026, 3, 3, tzinfo=UTC), window=timedelta(days=3))
    assert len(whole.frame) == 220
    assert set(whole.frame.columns) >= {"arm", "served", "model_version", "score", "feat_x0", "feat_x1"}
    day2 = load(url, FEATURES, until=datetime(2026, 3, 3, tzinfo=UTC), window=timedelta(hours=24))
    assert len(day2.frame) == 120 and day2.since == datetime(2026, 3, 2, tzinfo=UTC)
    ts = whole.frame["ts"].sort_values()
    cut = ts.iloc[50].to_pydatetime()
    assert cut.tzinfo is not None
    before = load(url, FEATURES, until=cut, window=timedelta(days=2))
    assert len(before.frame) == 50 and (before.frame["ts"] < cut).all()


def test_row_window_takes_the_latest_requests_with_their_shadow_rows(tmp_path: Path) -> None:
    url = _log(tmp_path)
    latest = load(url, FEATURES, until=datetime(2026, 3, 3, tzinfo=UTC), rows=40)
    assert int(latest.frame["served"].sum()) == 40
    assert len(latest.frame) == 80  # each served request with its shadow row
    assert latest.frame["request_id"].str.startswith("d2-").all()
    # more than the newest day holds: reaches back into the day before
    spanning = load(url, FEATURES, until=datetime(2026, 3, 3, tzinfo=UTC), rows=100)
    assert int(spanning.frame["served"].sum()) == 100
    assert spanning.frame.loc[spanning.frame["served"], "request_id"].str.startswith("d1-").sum() == 40
    assert spanning.since is not None and spanning.since.date().isoformat() == "2026-03-01"
    # fewer rows than asked: all of them (the analysis decides whether that is enough)
    assert int(load(url, FEATURES, until=datetime(2026, 3, 3, tzinfo=UTC), rows=10_000).frame["served"].sum()) == 160


def test_no_rows_is_a_permanent_error(tmp_path: Path) -> None:
    url = _log(tmp_path)
    with pytest.raises(PermanentError, match=r"no data: the prediction log .* has no rows since 2026-02-01"):
        load(url, FEATURES, until=datetime(2026, 2, 2, tzinfo=UTC), window=timedelta(days=1))
    with pytest.raises(PermanentError, match="no data"):
        load(str(tmp_path / "nowhere"), FEATURES, until=datetime(2026, 3, 3, tzinfo=UTC), rows=5)


def test_missing_feature_column_is_named(tmp_path: Path) -> None:
    url = _log(tmp_path)
    with pytest.raises(PermanentError, match="has no column 'feat_amount'") as info:
        load(url, [*FEATURES, "amount"], until=datetime(2026, 3, 3, tzinfo=UTC), window=timedelta(days=3))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("6h", 21600), ("1d", 86400),
                                               ("2w", 1209600), ("1.5h", 5400)])
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "5", "0h", "-1h", "1y", "h"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
