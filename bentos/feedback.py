"""Label feedback against the logs: which request ids were scored, and which labels already exist.

Both questions are answered from the Parquet datasets themselves (reading only the ``request_id`` /
``label`` columns, filtered with ``isin``), so any router replica can take any label. Blocking I/O:
the Router calls these from a worker thread.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import timedelta

import fsspec
import pyarrow as pa
import pyarrow.dataset as ds

from kingmaker import logs

_PARTITIONING = ds.partitioning(pa.schema([(logs.PARTITION, pa.string())]), flavor="hive")


def _dataset(url: str) -> ds.Dataset | None:
    fs, root = fsspec.core.url_to_fs(url)
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
