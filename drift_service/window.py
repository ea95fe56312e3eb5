"""Loading the analysed window from the prediction log: by time (``--window 24h``) or by count.

The log is the Parquet dataset of `kingmaker.logs` (a local folder or any fsspec URL). Only the
columns the analysis needs are read: `analysis.WINDOW_COLUMNS` and the reference's ``feat_*``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa

from drift_service.analysis import WINDOW_COLUMNS, Window
from kingmaker.errors import PermanentError, TemporaryError
from kingmaker.logs import PARTITION, feature_column, filesystem, read_predictions

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``6h``, ``1d``, ``2w`` -> timedelta (must be positive)."""
    match = _DURATION.match(text)
    if not match or float(match[1]) <= 0:
        raise ValueError(f"not a positive duration like 30m, 6h or 7d: {text!r}")
    return timedelta(seconds=float(match[1]) * _UNITS[match[2]])


def load(url: str, features: Sequence[str], *, until: datetime, window: timedelta | None = None,
         rows: int | None = None) -> Window:
    """Rows of the log in ``[until - window, until)``, or the latest ``rows`` requests before ``until``.

    With ``rows``, the latest ``rows`` *served* rows (one per request) are kept together with every
    other row of the same requests (the shadow arm's). Raises `PermanentError` when the window holds
    no rows at all, `TemporaryError` when the log cannot be read.
    """
    if (window is None) == (rows is None):
        raise ValueError("give exactly one of window or rows")
    columns = [*WINDOW_COLUMNS, *(feature_column(f) for f in features)]
    if window is not None:
        since: datetime | None = until - window
        frame = _read(url, columns, since=since, until=until)
    else:
        assert rows is not None
        frame = _latest(url, columns, rows, until)
        since = frame["ts"].min().to_pydatetime() if not frame.empty else None
    if frame.empty:
        span = f"since {since:%Y-%m-%d %H:%M} UTC" if since is not None else "at all"
        raise PermanentError(f"no data: the prediction log at {url} has no rows {span} (until "
                             f"{until:%Y-%m-%d %H:%M} UTC)")
    return Window(frame=frame, since=since, until=until, source=url)


def _read(url: str, columns: list[str], *, since: datetime | None, until: datetime) -> pd.DataFrame:
    try:
        return read_predictions(url, since=since, until=until, columns=columns)
    except pa.ArrowInvalid as exc:
        missing = re.search(r"FieldRef\.Name\(([^)]*)\)", str(exc))
        what = f"column {missing[1]!r}" if missing else "a column the drift reference needs"
        raise PermanentError(f"the prediction log at {url} has no {what} (the champion's reference "
                             "expects it)") from exc
    except OSError as exc:
        raise TemporaryError(f"cannot read the prediction log at {url}: {exc}") from exc


def _days(url: str) -> list[str]:
    """Date partitions of the log, newest first."""
    try:
        fs, root = filesystem(url)
        if not fs.exists(root):
            return []
        names = [str(p).rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)]
    except OSError as exc:
        raise TemporaryError(f"cannot list the prediction log at {url}: {exc}") from exc
    prefix = f"{PARTITION}="
    return sorted((n[len(prefix):] for n in names if n.startswith(prefix)), reverse=True)


def _latest(url: str, columns: list[str], rows: int, until: datetime) -> pd.DataFrame:
    parts: list[pd.DataFrame] = []
    served = 0
    for day in _days(url):
        start = datetime.fromisoformat(day).replace(tzinfo=UTC)
        if start >= until:
            continue
        part = _read(url, columns, since=start, until=min(start + timedelta(days=1), until))
        parts.append(part)
        served += int(part["served"].sum()) if not part.empty else 0
        if served >= rows:
            break
    parts = [p for p in parts if not p.empty]
    if not parts:
        return pd.DataFrame(columns=columns)
    frame = pd.concat(parts, ignore_index=True)
    served = frame["served"].to_numpy(dtype=bool)
    if served.sum() <= rows:
        return frame
    # the `rows` most recent served rows (a partial sort, not a full one) ...
    served_at = np.flatnonzero(served)
    ts = frame["ts"].dt.tz_convert(None).to_numpy(dtype="datetime64[us]").view(np.int64)[served_at]
    keep = np.zeros(len(frame), dtype=bool)
    keep[served_at[np.argpartition(ts, len(ts) - rows)[len(ts) - rows:]]] = True
    # ... and the other rows (shadow arm) of those requests
    others = ~served
    if others.any():
        ids = frame["request_id"]
        keep[others] = ids[others].isin(ids[keep]).to_numpy()
    return frame.loc[keep].reset_index(drop=True)
