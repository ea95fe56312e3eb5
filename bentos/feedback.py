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
import logging
from collections.abc import Callable, Collection, Sequence
from datetime import timedelta

import anyio.to_thread
import pyarrow as pa
import pyarrow.dataset as ds

from bentos.answers import RateLimitedLog, Unavailable
from bentos.messages import ErrorCode, FeedbackResult, Label
from bentos.metrics import Metrics
from bentos.validation import check_batch_size
from kingmaker import logs

MAX_LISTED = 100  # ids listed in an answer, at most

log = logging.getLogger(__name__)
rate_limited = RateLimitedLog(log)

_PARTITIONING = ds.partitioning(pa.schema([(logs.PARTITION, pa.string())]), flavor="hive")


def _dataset(url: str) -> ds.Dataset | None:
    """The dataset at ``url``, None while it has no file (a folder whose only write failed has none, and its
    schema would then lack every column asked for)."""
    fs, root = logs.filesystem(url)  # no stale listing: other processes add files
    if not fs.exists(root):
        return None
    data = ds.dataset(root, filesystem=fs, format="parquet", partitioning=_PARTITIONING,
                      exclude_invalid_files=True, ignore_prefixes=[".", "_"])
    return data if data.files else None


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
    """The ``/feedback`` logic over a `FeedbackStore`; ``pending()`` gives the request ids of the prediction
    rows not yet in the dataset (the Router's log segments)."""

    def __init__(self, store: FeedbackStore, pending: Callable[[], set[str]], metrics: Metrics, max_labels: int):
        self.store = store
        self.pending = pending
        self.max_labels = max_labels
        self._lock = asyncio.Lock()
        self._labels = metrics.counter("kingmaker_feedback_labels")
        for outcome in ("written", "duplicate", "updated", "superseded"):  # start at 0: the first counts as an increase
            self._labels.labels(outcome=outcome)
        self._unknown = metrics.counter("kingmaker_feedback_unknown_ids")

    async def record(self, items: Sequence[Label]) -> FeedbackResult:
        """Record one request's labels. Within it the last label per request id is the one kept: an earlier,
        different label for the same id is *superseded* (reported with its id), an earlier identical one is a
        duplicate. The kept label is written unless it equals the one already recorded (a duplicate too).
        A label log that cannot be read or written is a 503 (`Unavailable`): nothing half-done stays behind."""
        check_batch_size(len(items), self.max_labels, ("labels",))
        latest: dict[str, int] = {}
        for item in items:
            latest[item.request_id] = item.label
        seen: set[tuple[str, int]] = set()
        superseded: list[str] = []
        repeats = 0
        for item in reversed(items):  # the last label of an id is kept; earlier ones are repeats or superseded
            key = (item.request_id, item.label)
            if key in seen:
                repeats += 1
            else:
                if latest[item.request_id] != item.label:
                    superseded.append(item.request_id)
                seen.add(key)
        ids = list(latest)
        store = self.store
        try:
            async with self._lock:  # one writer per process: no duplicate rows from concurrent retries
                pending = self.pending()
                unknown_candidates = [i for i in ids if i not in pending]
                known = await anyio.to_thread.run_sync(store.known_ids, unknown_candidates)
                existing = await anyio.to_thread.run_sync(store.latest_labels, ids)
                to_write = [(rid, lab) for rid, lab in latest.items() if existing.get(rid) != lab]
                updated = sum(1 for rid, _ in to_write if rid in existing)
                written = await anyio.to_thread.run_sync(store.append, to_write)
        except (OSError, pa.ArrowException) as exc:
            rate_limited("labels", "/feedback: the label log is unavailable: %s", exc, level=logging.ERROR)
            raise Unavailable(ErrorCode.LABEL_STORE_UNAVAILABLE, "the label log cannot be read or written right "
                              "now; nothing was recorded, retry later", None, reason="label_store") from exc
        unknown = [i for i in unknown_candidates if i not in known]
        duplicates = len(items) - written - len(superseded)
        for outcome, n in (("written", written - updated), ("updated", updated), ("duplicate", duplicates),
                           ("superseded", len(superseded))):
            if n:
                self._labels.labels(outcome=outcome).inc(n)
        if unknown:
            self._unknown.inc(len(unknown))
        return FeedbackResult(received=len(items), written=written, duplicates=duplicates, updated=updated,
                              superseded=len(superseded), superseded_ids=superseded[::-1][:MAX_LISTED],
                              unknown=len(unknown), unknown_ids=unknown[:MAX_LISTED])
