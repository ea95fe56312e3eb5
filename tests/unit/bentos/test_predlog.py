"""The buffered prediction-log writer: size/time flushes, shutdown flush, retries, no lost rows."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from bentos.predlog import BufferedLog, prediction_writer
from kingmaker import logs


class Sink:
    """A writer that records batches and can be told to fail."""

    def __init__(self, fail_times: int = 0):
        self.batches: list[list[dict[str, object]]] = []
        self.fail_times = fail_times
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, rows: list[dict[str, object]]) -> int:
        with self.lock:
            self.calls += 1
            if self.fail_times:
                self.fail_times -= 1
                raise OSError("store down")
            self.batches.append(list(rows))
            return len(rows)

    @property
    def rows(self) -> list[dict[str, object]]:
        return [r for b in self.batches for r in b]


def wait_for(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached")


def test_flushes_by_size() -> None:
    sink = Sink()
    buf = BufferedLog(sink, max_rows=10, max_delay_s=60)
    buf.add({"i": i} for i in range(25))
    wait_for(lambda: len(sink.rows) >= 25)  # one batch of 25 (>= 10), nothing left behind
    assert [r["i"] for r in sink.rows] == list(range(25))
    buf.close()


def test_flushes_by_age() -> None:
    sink = Sink()
    buf = BufferedLog(sink, max_rows=1000, max_delay_s=0.05)
    buf.add_one({"i": 1})
    wait_for(lambda: len(sink.rows) == 1, timeout=2.0)
    buf.close()


def test_close_writes_everything_left() -> None:
    sink = Sink()
    buf = BufferedLog(sink, max_rows=1000, max_delay_s=3600)
    for i in range(123):
        buf.add_one({"i": i})
    assert sink.rows == []
    buf.close()
    assert [r["i"] for r in sink.rows] == list(range(123))
    assert buf.pending == 0 and buf.written == 123
    with pytest.raises(RuntimeError, match="closed"):
        buf.add_one({"i": 0})


def test_failed_writes_keep_rows_in_order_and_retry() -> None:
    sink = Sink(fail_times=2)
    failed: list[int] = []
    buf = BufferedLog(sink, max_rows=5, max_delay_s=0.01, on_failed=failed.append)
    buf.add({"i": i} for i in range(5))
    wait_for(lambda: sink.calls >= 1)
    buf.add({"i": i} for i in range(5, 8))
    buf.close()  # retries at shutdown too
    assert [r["i"] for r in sink.rows] == list(range(8))
    assert failed and buf.dropped == 0


def test_overflow_drops_oldest_and_counts() -> None:
    sink = Sink(fail_times=10**6)
    dropped: list[int] = []
    buf = BufferedLog(sink, max_rows=2, max_delay_s=0.0, max_buffer_rows=4, on_dropped=dropped.append)
    for i in range(10):
        buf.add_one({"i": i})
        time.sleep(0.005)
    buf.close(retries=0)
    assert sum(dropped) >= 6  # 10 rows, at most 4 kept; the rest reported lost
    assert buf.dropped + (sum(dropped) - buf.dropped) == sum(dropped)


def test_lag_is_the_age_of_the_oldest_unwritten_row_across_failed_writes() -> None:
    now = [100.0]
    sink = Sink(fail_times=1)
    buf = BufferedLog(sink, max_rows=1000, max_delay_s=3600, clock=lambda: now[0])
    assert buf.lag_seconds == 0.0
    buf.add_one({"i": 0})
    now[0] = 110.0
    buf.add_one({"i": 1})
    now[0] = 130.0
    assert buf.lag_seconds == 30.0
    assert buf.flush() == 0  # the store fails: the rows go back, keeping their age
    now[0] = 140.0
    assert buf.lag_seconds == 40.0
    assert buf.flush() == 2
    assert buf.lag_seconds == 0.0
    buf.close()


def test_pending_values_include_rows_being_written() -> None:
    gate = threading.Event()
    seen: list[set[object]] = []

    def slow(rows: list[dict[str, object]]) -> int:
        seen.append(buf.pending_values("request_id"))
        gate.wait(5)
        return len(rows)

    buf = BufferedLog(slow, max_rows=2, max_delay_s=60)
    buf.add([{"request_id": "a"}, {"request_id": "b"}])
    wait_for(lambda: bool(seen))
    buf.add_one({"request_id": "c"})
    assert buf.pending_values("request_id") == {"a", "b", "c"}
    gate.set()
    buf.close()


def test_prediction_writer_roundtrip(tmp_path: Path) -> None:
    url = str(tmp_path / "predictions")
    write = prediction_writer(url)
    ts = logs.now()
    rows = [{"request_id": f"r{i}", "ts": ts, "routing_key": "c1", "arm": "champion", "served": True,
             "mode": "split", "model_name": "m", "model_version": "3", "score": 0.1 * i, "decision": i > 5,
             "threshold": 0.5, "latency_ms": 1.0, "feat_amount": float(i), "feat_f01": -1.0} for i in range(10)]
    assert write(rows) == 10
    frame = logs.read_predictions(url)
    assert sorted(frame["request_id"]) == sorted(f"r{i}" for i in range(10))
    assert {"feat_amount", "feat_f01"} <= set(frame.columns)
    assert frame.set_index("request_id").loc["r7", "feat_amount"] == 7.0
