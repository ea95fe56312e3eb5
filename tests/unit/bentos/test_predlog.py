"""The Router's prediction log (`bentos.predlog`): every row is in a local segment when `add` returns, segments
move into the dataset by size, age and on close, failures are retried in order, a crashed Router's segments are
taken over without duplicating what it had already moved, and a full disk refuses rows instead of losing them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bentos.predlog import SUFFIX, LogUnavailable, SegmentLog, prediction_writer, read_segment
from kingmaker import logs
from kingmaker.settings import FsyncPolicy

ROOT = Path(__file__).resolve().parents[3]
DEST = "/the/log"


class Sink:
    """A writer that records what it is given per segment and can be told to fail."""

    def __init__(self, fail_times: int = 0):
        self.batches: list[tuple[str, list[dict[str, Any]]]] = []
        self.fail_times = fail_times
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, rows: list[dict[str, Any]], name: str) -> int:
        with self.lock:
            self.calls += 1
            if self.fail_times:
                self.fail_times -= 1
                raise OSError("store down")
            self.batches.append((name, list(rows)))
            return len(rows)

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [r for _, b in self.batches for r in b]


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached")


def rows(start: int, stop: int) -> list[dict[str, Any]]:
    return [{"request_id": f"r{i}", "i": i} for i in range(start, stop)]


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"*{SUFFIX}"))


def test_rows_are_in_a_segment_before_add_returns(tmp_path: Path) -> None:
    sink = Sink()
    log = SegmentLog(sink, tmp_path, DEST, max_rows=1000, max_delay_s=3600)
    log.add(rows(0, 3))
    log.add_one({"request_id": "r3", "i": 3})
    (path,) = segment_files(tmp_path)
    header, found, bad = read_segment(path)
    assert header == {"kingmaker_segment": 1, "destination": DEST}
    assert [r["i"] for r in found] == [0, 1, 2, 3] and bad == 0
    assert sink.rows == [] and log.pending == 4 and log.pending_ids() == {"r0", "r1", "r2", "r3"}
    log.close()
    assert [r["i"] for r in sink.rows] == [0, 1, 2, 3]
    assert list(tmp_path.iterdir()) == []  # every segment moved, the lock file gone
    with pytest.raises(RuntimeError, match="closed"):
        log.add_one({"request_id": "x"})


def test_segments_move_by_size_in_order_and_by_age(tmp_path: Path) -> None:
    sink = Sink()
    log = SegmentLog(sink, tmp_path / "a", DEST, max_rows=10, max_delay_s=3600)
    for i in range(25):
        log.add_one({"request_id": f"r{i}", "i": i})
    wait_for(lambda: len(sink.rows) >= 20)  # two full segments; five rows wait in the current one
    assert [r["i"] for r in sink.rows] == list(range(20))
    assert len({name for name, _ in sink.batches}) == len(sink.batches)  # one name per segment
    log.close()
    assert [r["i"] for r in sink.rows] == list(range(25))
    aged = Sink()
    log = SegmentLog(aged, tmp_path / "b", DEST, max_rows=1000, max_delay_s=0.05)
    log.add_one({"request_id": "r1"})
    wait_for(lambda: len(aged.rows) == 1, timeout=2.0)
    log.close()


def test_failed_moves_keep_rows_in_order_and_retry(tmp_path: Path) -> None:
    sink = Sink(fail_times=2)
    failed: list[int] = []
    log = SegmentLog(sink, tmp_path, DEST, max_rows=5, max_delay_s=0.01, on_failed=failed.append)
    log.add(rows(0, 5))
    wait_for(lambda: sink.calls >= 1)
    log.add(rows(5, 8))
    log.close()  # retries at shutdown too
    assert [r["i"] for r in sink.rows] == list(range(8))
    assert failed and log.written == 8


def test_rows_over_the_memory_bound_are_read_back_from_their_segment(tmp_path: Path) -> None:
    """The store is down for long: nothing is dropped; the oldest segments keep their rows on disk only."""
    sink = Sink(fail_times=10**9)
    log = SegmentLog(sink, tmp_path, DEST, max_rows=2, max_delay_s=0.0, max_buffer_rows=4)
    for i in range(10):
        log.add_one({"request_id": f"r{i}", "i": i})
        time.sleep(0.005)
    wait_for(lambda: len(segment_files(tmp_path)) >= 4)
    assert log._in_memory <= 4 + 2  # the waiting segments hold at most the bound (the current one may add a row)
    assert log.pending_ids() == {f"r{i}" for i in range(10)}
    sink.fail_times = 0
    log.close()
    assert sorted(r["i"] for r in sink.rows) == list(range(10))
    assert [r["i"] for r in sink.rows] == list(range(10))  # still in arrival order


def test_lag_is_the_age_of_the_oldest_row_not_yet_moved(tmp_path: Path) -> None:
    now = [100.0]
    sink = Sink(fail_times=1)
    log = SegmentLog(sink, tmp_path, DEST, max_rows=1000, max_delay_s=3600, clock=lambda: now[0])
    assert log.lag_seconds == 0.0
    log.add_one({"request_id": "a"})
    now[0] = 110.0
    log.add_one({"request_id": "b"})
    now[0] = 130.0
    assert log.lag_seconds == 30.0
    assert log.flush() == 0  # the store fails: the segment waits, keeping its age
    now[0] = 140.0
    assert log.lag_seconds == 40.0
    assert log.flush() == 2
    assert log.lag_seconds == 0.0
    log.close()


def test_pending_ids_include_rows_being_moved(tmp_path: Path) -> None:
    gate = threading.Event()
    seen: list[set[str]] = []

    def slow(batch: list[dict[str, Any]], name: str) -> int:
        seen.append(log.pending_ids())
        gate.wait(5)
        return len(batch)

    log = SegmentLog(slow, tmp_path, DEST, max_rows=2, max_delay_s=60)
    log.add([{"request_id": "a"}, {"request_id": "b"}])
    wait_for(lambda: bool(seen))
    log.add_one({"request_id": "c"})
    assert log.pending_ids() == {"a", "b", "c"}
    gate.set()
    log.close()


@pytest.mark.parametrize("policy", list(FsyncPolicy))
def test_every_fsync_policy_moves_every_row(tmp_path: Path, policy: FsyncPolicy) -> None:
    sink = Sink()
    log = SegmentLog(sink, tmp_path, DEST, max_rows=3, max_delay_s=0.02, fsync=policy)
    for i in range(10):
        log.add_one({"request_id": f"r{i}", "i": i})
        time.sleep(0.01)
    log.close()
    assert [r["i"] for r in sink.rows] == list(range(10))


def _crash(tmp_path: Path, script: str) -> None:
    """Run ``script`` (with ``log``, ``rows``, ``url`` and ``directory`` defined) in a process that dies without
    cleaning up: SIGKILL of itself, as the OOM killer would."""
    code = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from bentos.predlog import SegmentLog, prediction_writer
        from kingmaker import logs
        url, directory = {str(tmp_path / 'predictions')!r}, Path({str(tmp_path / 'segments')!r})
        def rows(a, b):
            return [{{"request_id": f"r{{i}}", "ts": logs.now(), "arm": "champion", "served": True, "mode": "split",
                     "model_name": "m", "model_version": "1", "score": 0.5, "decision": False, "threshold": 0.5,
                     "latency_ms": 1.0, "routing_key": "k", "feat_f01": float(i)}} for i in range(a, b)]
    """) + textwrap.dedent(script) + "\nos.kill(os.getpid(), signal.SIGKILL)\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]


def test_a_crashed_routers_segments_are_taken_over_without_duplicates(tmp_path: Path) -> None:
    """The crashed process had moved its first segment to the dataset but was killed before deleting it (the
    writer below kills it right after the Parquet file is written); its second segment never moved."""
    _crash(tmp_path, """
        write = prediction_writer(url)
        def write_then_die(batch, name):
            n = write(batch, name)
            os.kill(os.getpid(), signal.SIGKILL)
        log = SegmentLog(write_then_die, directory, url, max_rows=1000, max_delay_s=3600)
        log.add(rows(0, 50))
        log.flush()
    """)
    assert len(logs.read_predictions(str(tmp_path / "predictions"))) == 50  # moved, and its segment still there
    _crash(tmp_path, """
        log = SegmentLog(prediction_writer(url), directory, url, max_rows=1000, max_delay_s=3600)
        log.add(rows(50, 80))
    """)
    assert len(segment_files(tmp_path / "segments")) == 2  # ... one of the first Router, one of the second
    url = str(tmp_path / "predictions")
    log = SegmentLog(prediction_writer(url), tmp_path / "segments", url, max_rows=1000, max_delay_s=3600)
    log.close()
    frame = logs.read_predictions(url)
    assert sorted(frame["request_id"]) == sorted(f"r{i}" for i in range(80))  # all there, none twice
    assert list((tmp_path / "segments").iterdir()) == []


def test_a_live_routers_segments_and_other_destinations_are_left_alone(tmp_path: Path) -> None:
    alive = SegmentLog(Sink(), tmp_path, DEST, max_rows=1000, max_delay_s=3600)
    alive.add(rows(0, 5))
    other = Sink()
    SegmentLog(other, tmp_path, DEST, max_rows=1000, max_delay_s=3600).close()
    assert other.rows == [] and len(segment_files(tmp_path)) == 1  # the live owner holds its lock
    os.close(alive._lock_fd)  # as if it died: its lock is free ...
    alive._closing = True
    elsewhere = Sink()
    SegmentLog(elsewhere, tmp_path, "/another/log", max_rows=1000, max_delay_s=3600).close()
    assert elsewhere.rows == [] and len(segment_files(tmp_path)) == 1  # ... but its rows go to DEST, not here
    heir = Sink()
    SegmentLog(heir, tmp_path, DEST, max_rows=1000, max_delay_s=3600).close()
    assert [r["i"] for r in heir.rows] == list(range(5)) and segment_files(tmp_path) == []


def test_a_full_disk_refuses_rows_and_keeps_the_segment_whole(tmp_path: Path) -> None:
    """A real EFBIG from the kernel (a file-size limit on the process): `add` raises, the segment keeps whole
    lines only, and the rows added before are all moved."""
    code = textwrap.dedent(f"""
        import resource, sys
        from pathlib import Path
        from bentos.predlog import LogUnavailable, SegmentLog, read_segment
        moved = []
        log = SegmentLog(lambda rows, name: moved.extend(rows) or len(rows), Path({str(tmp_path)!r}), "/x",
                         max_rows=10**6, max_delay_s=3600)
        log.add_one({{"request_id": "first", "pad": "x" * 100}})
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4000, hard))
        added = 1
        try:
            while True:
                log.add_one({{"request_id": f"r{{added}}", "pad": "x" * 100}})
                added += 1
        except LogUnavailable as exc:
            print("refused:", exc)
        path = log._current.path
        header, rows, bad = read_segment(path)
        assert bad == 0 and len(rows) == added, (bad, len(rows), added)
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        log.close()
        assert len(moved) == added
        print("ok", added)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "refused: cannot append to" in proc.stdout and "File too large" in proc.stdout
    assert 20 < int(proc.stdout.split("ok ")[1]) < 40


def test_add_raises_when_the_segment_folder_is_gone(tmp_path: Path) -> None:
    log = SegmentLog(Sink(), tmp_path / "segments", DEST, max_rows=1, max_delay_s=3600)
    log.add_one({"request_id": "a"})
    log.flush()
    os.rename(tmp_path / "segments", tmp_path / "moved")
    with pytest.raises(LogUnavailable, match="cannot create a segment"):
        log.add_one({"request_id": "b"})
    os.rename(tmp_path / "moved", tmp_path / "segments")
    log.close()


def test_prediction_writer_is_idempotent_per_segment(tmp_path: Path) -> None:
    url = str(tmp_path / "predictions")
    write = prediction_writer(url)
    ts = logs.now()
    batch = [{"request_id": f"r{i}", "ts": ts, "routing_key": "c1", "arm": "champion", "served": True,
              "mode": "split", "model_name": "m", "model_version": "3", "score": 0.1 * i, "decision": i > 5,
              "threshold": 0.5, "latency_ms": 1.0, "feat_amount": float(i), "feat_f01": -1.0} for i in range(10)]
    assert write(batch, "seg-1") == 10
    assert write([{**r, "ts": ts.isoformat()} for r in batch], "seg-1") == 10  # as read back from a segment
    frame = logs.read_predictions(url)
    assert sorted(frame["request_id"]) == sorted(f"r{i}" for i in range(10))  # once, not twice
    assert {"feat_amount", "feat_f01"} <= set(frame.columns)
    assert frame.set_index("request_id").loc["r7", "feat_amount"] == 7.0
