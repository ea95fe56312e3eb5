"""The prediction log and the label log: append-only Parquet datasets partitioned by date.

Both live in a local folder by default or at any fsspec URL (``s3://bucket/prefix``) in a
cluster. Every append writes one new file ``date=YYYY-MM-DD/part-<time>-<uuid>.parquet`` and never
touches an existing one, so concurrent writers (router replicas) need no coordination.

Prediction log: one row per scored request per arm, built by `prediction_row`. Feature values are
flat columns named ``feat_<name>`` (`feature_column`; back with `feature_names`) so that the drift job
reads them column-wise without parsing.

Label log: one row per label arrival; the latest arrival per ``request_id`` wins when read.
"""

from __future__ import annotations

import contextlib
import posixpath
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from kingmaker.roles import Arm, Mode

FEATURE_PREFIX = "feat_"
PARTITION = "date"


#: Columns every prediction row has, in order, before the ``feat_*`` columns.
PREDICTION_FIELDS: tuple[pa.Field, ...] = (
    pa.field("request_id", pa.string(), nullable=False),
    pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("routing_key", pa.string()),
    pa.field("arm", pa.string(), nullable=False),
    pa.field("served", pa.bool_(), nullable=False),  # this arm's answer went to the client
    pa.field("mode", pa.string(), nullable=False),
    pa.field("model_name", pa.string(), nullable=False),
    pa.field("model_version", pa.string(), nullable=False),
    pa.field("score", pa.float64(), nullable=False),
    pa.field("decision", pa.bool_(), nullable=False),
    pa.field("threshold", pa.float64(), nullable=False),
    pa.field("latency_ms", pa.float64(), nullable=False),
)

LABEL_FIELDS: tuple[pa.Field, ...] = (
    pa.field("request_id", pa.string(), nullable=False),
    pa.field("label", pa.int8(), nullable=False),
    pa.field("label_ts", pa.timestamp("us", tz="UTC"), nullable=False),
)


def feature_column(name: str) -> str:
    return f"{FEATURE_PREFIX}{name}"


def feature_names(columns: Iterable[str]) -> list[str]:
    """The features whose columns are among ``columns`` (a row's keys or a frame's columns), in order:
    the inverse of `feature_column`."""
    return [c[len(FEATURE_PREFIX):] for c in columns if c.startswith(FEATURE_PREFIX)]


def prediction_row(*, request_id: str, ts: datetime, routing_key: str, arm: Arm, served: bool, mode: Mode,
                   model_name: str, model_version: str, score: float, decision: bool, threshold: float,
                   latency_ms: float, features: Mapping[str, float]) -> dict[str, Any]:
    """One prediction-log row: the `PREDICTION_FIELDS` and a ``feat_<name>`` column per feature.

    ``served``: this arm's answer went to the client (False for a shadow call). ``latency_ms``: the arm call.
    Built for every request on the Router's hot path, so it is a plain dict (a few µs for 30 features).
    """
    row: dict[str, Any] = {
        "request_id": request_id, "ts": ts, "routing_key": routing_key, "arm": arm.value, "served": served,
        "mode": mode.value, "model_name": model_name, "model_version": model_version, "score": score,
        "decision": decision, "threshold": threshold, "latency_ms": latency_ms}
    columns = _COLUMNS
    for name, value in features.items():
        column = columns.get(name)
        if column is None:  # a name not seen before: the Router logs the same few (validated) names
            column = columns[name] = feature_column(name)
        row[column] = float(value)
    return row


_COLUMNS: dict[str, str] = {}  # feature name -> column, so the hot path does not build the same strings


def prediction_schema(features: Sequence[str]) -> pa.Schema:
    return pa.schema([*PREDICTION_FIELDS, *(pa.field(feature_column(f), pa.float64()) for f in features)])


LABEL_SCHEMA = pa.schema(list(LABEL_FIELDS))


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and path of a log ``url``, with fsspec's directory-listing cache off.

    Other processes (router replicas) add files to a log all the time. s3fs keeps a listing for the
    life of its (cached, shared) instance and answers later lookups from it, so a long-lived reader
    (the controller, a Router answering /feedback) would fail with FileNotFoundError on a file that
    another replica wrote after the first read. Reads list the store afresh anyway."""
    fs, path = fsspec.core.url_to_fs(url, use_listings_cache=False)
    return fs, path


def _to_table(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """Column by column, so timestamps of any timezone (or naive = UTC) land as UTC microseconds."""
    arrays = []
    for f in schema:
        if f.name not in frame.columns:
            arrays.append(pa.nulls(len(frame), f.type))
        elif pa.types.is_timestamp(f.type):
            utc = pd.to_datetime(frame[f.name], utc=True).dt.tz_convert(None)
            arrays.append(pa.array(utc.to_numpy("datetime64[us]"), type=f.type))
        else:
            arrays.append(pa.array(frame[f.name].to_numpy(), type=f.type, from_pandas=True))
    return pa.Table.from_arrays(arrays, schema=schema)


def append(url: str, rows: pd.DataFrame | Iterable[Mapping[str, Any]], schema: pa.Schema, *, ts_column: str,
           name: str | None = None) -> int:
    """Append rows as new Parquet file(s), one per date partition. Returns the number of rows in the log.

    Each file is written under a temporary name (``.part-….tmp``, which readers skip) and renamed when
    complete, so readers never see half a file; a failed write removes its temporary file, so a full disk
    leaves nothing behind. With ``name``, the files are ``part-<name>.parquet`` and a partition that already
    has its file is skipped: appending the same rows under the same name again (a retry, or a recovery after
    a crash between writing and forgetting them) adds nothing."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if frame.empty:
        return 0
    missing = [f.name for f in schema if f.name not in frame.columns and not f.nullable]
    if missing:
        raise ValueError(f"log rows lack required column(s): {', '.join(missing)}")
    table = _to_table(frame, schema)
    fs, root = filesystem(url)
    dates = pd.to_datetime(frame[ts_column], utc=True).dt.strftime("%Y-%m-%d").to_numpy()
    written = 0
    for day in sorted(set(dates)):
        part = table.filter(pa.array(dates == day))
        folder = posixpath.join(root, f"{PARTITION}={day}")
        final = posixpath.join(folder, f"part-{name or f'{time.time_ns()}-{uuid.uuid4().hex[:8]}'}.parquet")
        if name is not None and fs.exists(final):
            written += part.num_rows
            continue
        fs.makedirs(folder, exist_ok=True)
        tmp = posixpath.join(folder, f".{posixpath.basename(final)}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with fs.open(tmp, "wb") as fh:
                pq.write_table(part, fh, compression="zstd")
            fs.mv(tmp, final)  # readers never see a half-written file
        except BaseException:
            with contextlib.suppress(OSError):  # the store may be what failed; readers skip it anyway
                fs.rm(tmp)
            raise
        written += part.num_rows
    return written


def append_predictions(url: str, rows: pd.DataFrame | Iterable[Mapping[str, Any]], features: Sequence[str], *,
                       name: str | None = None) -> int:
    return append(url, rows, prediction_schema(features), ts_column="ts", name=name)


def append_labels(url: str, rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> int:
    return append(url, rows, LABEL_SCHEMA, ts_column="label_ts")


def read(url: str, *, since: datetime | None = None, until: datetime | None = None,
         ts_column: str = "ts", columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read a log dataset, optionally only rows with ``since <= ts < until``. Empty frame if none."""
    fs, root = filesystem(url)
    if not fs.exists(root):
        return pd.DataFrame()
    dataset = ds.dataset(root, filesystem=fs, format="parquet", partitioning="hive",
                         exclude_invalid_files=True, ignore_prefixes=[".", "_"])  # temporary files: .part-*.tmp
    if not dataset.files:  # e.g. a partition folder whose only write failed: no schema to filter on
        return pd.DataFrame()
    expr = None
    for op, bound in (("ge", since), ("lt", until)):
        if bound is not None:
            scalar = pa.scalar(bound.astimezone(UTC), type=pa.timestamp("us", tz="UTC"))
            term = ds.field(ts_column) >= scalar if op == "ge" else ds.field(ts_column) < scalar
            expr = term if expr is None else expr & term
    cols = list(columns) if columns is not None else [n for n in dataset.schema.names if n != PARTITION]
    return dataset.to_table(columns=cols, filter=expr).to_pandas()


def read_predictions(url: str, **kwargs: Any) -> pd.DataFrame:
    return read(url, ts_column="ts", **kwargs)


def read_labels(url: str, **kwargs: Any) -> pd.DataFrame:
    """Labels with the latest arrival per request id."""
    frame = read(url, ts_column="label_ts", **kwargs)
    if frame.empty:
        return frame
    return frame.sort_values("label_ts").drop_duplicates("request_id", keep="last").reset_index(drop=True)


def now() -> datetime:
    return datetime.now(UTC)
