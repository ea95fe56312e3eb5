"""Label feedback (the Router's ``/feedback``): record labels for scored requests, idempotently.

`Feedback.record` takes one request's labels: the last label per request id wins, a label identical to
the one already recorded is not written again, and ids that were never scored are recorded anyway and
reported. Which ids were scored and which labels exist is answered by `FeedbackStore` from the Parquet
datasets themselves (reading only the ``request_id`` / ``label`` columns, filtered with ``isin``) plus the
rows still in the Router's buffer, so any router replica can take any label. The store's blocking I/O
runs in a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Sequence
from datetime import timedelta
from typing import Any

import anyio.to_thread
import pyarrow as pa
import pyarrow.dataset as ds

from bentos.messages import FeedbackResult, Label
from bentos.metrics import Metrics
from bentos.validation import check_batch_size
from kingmaker import logs

MAX_UNKNOWN_LISTED = 100

_PARTITIONING = ds.partitioning(pa.schema([(logs.PARTITION, pa.string())]), flavor="hive")


def _dataset(url: str) -> ds.Dataset | None:
    fs, root = logs.filesystem(url)  # no stale listing: other processes add files
    if not fs.exists(root):
        return None
    return ds.dataset(root, filesystem=fs, format="parquet", partitioning=_PARTITIONING,
                      exclude_invalid_files=True, ignore_prefixes=[".", "_"])


class FeedbackStore:
    def __init__(self, predictions_url: str, labels_url: str, lookup_days: int = 30):
        self.predictions_url = predictions_url
        self.labels_url = labels_url
        self.lookup_days = lookup_days

    def known_ids(self, ids: Collection[str]) -> set[str]:
        """The subset of ``ids`` present in the prediction log of the last ``lookup_days`` days."""
        data = _dataset(self.predictions_url)
        if data is None or not ids:
            return set()
        since = (logs.now() - timedelta(days=self.lookup_days)).strftime("%Y-%m-%d")
        expr = (ds.field(logs.PARTITION) >= since) & ds.field("request_id").isin(list(ids))
        table = data.to_table(columns=["request_id"], filter=expr)
        return set(table.column("request_id").to_pylist())

    def latest_labels(self, ids: Collection[str]) -> dict[str, int]:
        """The label currently recorded for each of ``ids`` that has one (latest arrival wins)."""
        data = _dataset(self.labels_url)
        if data is None or not ids:
            return {}
        table = data.to_table(columns=["request_id", "label", "label_ts"],
                              filter=ds.field("request_id").isin(list(ids)))
        if table.num_rows == 0:
            return {}
        table = table.sort_by([("label_ts", "ascending")])
        return dict(zip(table.column("request_id").to_pylist(), table.column("label").to_pylist(), strict=True))

    def append(self, labels: Sequence[tuple[str, int]]) -> int:
        if not labels:
            return 0
        ts = logs.now()
        return logs.append_labels(self.labels_url, [{"request_id": rid, "label": lab, "label_ts": ts}
                                                    for rid, lab in labels])


class Feedback:
    """The ``/feedback`` logic over a `FeedbackStore`; ``pending(key)`` gives the values of ``key`` in the
    prediction rows not yet written (the Router's log buffer)."""

    def __init__(self, store: FeedbackStore, pending: Callable[[str], set[Any]], metrics: Metrics, max_labels: int):
        self.store = store
        self.pending = pending
        self.max_labels = max_labels
        self._lock = asyncio.Lock()
        self._labels = metrics.counter("kingmaker_feedback_labels")
        for outcome in ("written", "duplicate", "updated"):  # start at 0: the first label counts as an increase
            self._labels.labels(outcome=outcome)
        self._unknown = metrics.counter("kingmaker_feedback_unknown_ids")

    async def record(self, items: Sequence[Label]) -> FeedbackResult:
        check_batch_size(len(items), self.max_labels, ("labels",))
        latest: dict[str, int] = {}
        for item in items:  # within one request the last label for an id wins
            latest[item.request_id] = item.label
        ids = list(latest)
        store = self.store
        async with self._lock:  # one writer per process: no duplicate rows from concurrent retries
            pending = self.pending("request_id")
            unknown_candidates = [i for i in ids if i not in pending]
            known = await anyio.to_thread.run_sync(store.known_ids, unknown_candidates)
            existing = await anyio.to_thread.run_sync(store.latest_labels, ids)
            to_write = [(rid, lab) for rid, lab in latest.items() if existing.get(rid) != lab]
            updated = sum(1 for rid, _ in to_write if rid in existing)
            written = await anyio.to_thread.run_sync(store.append, to_write)
        unknown = [i for i in unknown_candidates if i not in known]
        duplicates = len(items) - written
        for outcome, n in (("written", written - updated), ("updated", updated), ("duplicate", duplicates)):
            if n:
                self._labels.labels(outcome=outcome).inc(n)
        if unknown:
            self._unknown.inc(len(unknown))
        return FeedbackResult(received=len(items), written=written, duplicates=duplicates, updated=updated,
                              unknown=len(unknown), unknown_ids=unknown[:MAX_UNKNOWN_LISTED])
