"""/feedback's store (`bentos.feedback.FeedbackStore`) reads the label and prediction logs: a partition whose
only write failed (a full disk) used to break every later read with ArrowInvalid, so /feedback answered 500
for good."""

from __future__ import annotations

from pathlib import Path

from bentos.feedback import FeedbackStore
from kingmaker import logs


def test_an_empty_partition_reads_as_no_labels_and_takes_the_next_write(tmp_path: Path) -> None:
    url = tmp_path / "labels"
    (url / "date=2026-12-02").mkdir(parents=True)  # what a failed first write of the day leaves
    (url / "date=2026-12-02" / ".part-1.parquet.x.tmp").write_bytes(b"")  # ... or a crash in the middle of one
    store = FeedbackStore(str(tmp_path / "predictions"), str(url))
    assert store.latest_labels(["r1"]) == {}  # was ArrowInvalid: No match for FieldRef.Name(request_id)
    assert store.known_ids(["r1"]) == set()
    (tmp_path / "predictions" / "date=2026-12-02").mkdir(parents=True)
    assert store.known_ids(["r1"]) == set()
    assert store.append([("r1", 1)]) == 1 and store.latest_labels(["r1"]) == {"r1": 1}
    assert logs.read_labels(str(url))["request_id"].tolist() == ["r1"]
