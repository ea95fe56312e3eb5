"""The Router's prediction log: every row is on local disk before its answer is sent, then moves into the
Parquet dataset (`kingmaker.logs`) in the background. Answered ⇒ logged.

`SegmentLog.add` appends rows to the current *segment*, a local append-only file of JSON lines, with one
``write(2)``: once it returns the rows are in the kernel's page cache, so a Router killed right after (SIGKILL,
the OOM killer) loses none of them. Whether a *machine* crash may lose the last seconds is the
`kingmaker.settings.FsyncPolicy`. If the append fails (disk full) `LogUnavailable` is raised and the Router
answers 503 rather than give an answer it could not log.

A background thread closes the current segment by size (``max_rows``) or age (``max_delay_s``) and moves each
closed segment, in order, into the dataset as the file ``part-<segment id>.parquet``, then deletes it. A failed
move is retried with backoff; nothing is dropped: when more than ``max_buffer_rows`` rows wait, the oldest
segments' rows are released from memory and read back from their files when the store is back.

After a crash: segments are named ``<owner>-<seq>.seg`` and a live owner holds an ``flock`` on
``<owner>.lock``. On start-up a Router takes over the segments of owners whose lock is free (they are gone)
and whose rows go to its own dataset (each segment's first line names it), and moves them like its own. The
move is idempotent: the Parquet file is named after the segment and a partition that already has it is
skipped, so a crash between writing the file and deleting the segment adds no duplicate row. Rows of a line
cut short by a machine crash cannot be read back: they are counted as dropped.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from bentos.metrics import Metrics
from kingmaker import logs
from kingmaker.settings import FsyncPolicy, ServingSettings

log = logging.getLogger(__name__)

Row = dict[str, Any]
Writer = Callable[[list[Row], str], int]  # (rows, segment id) -> rows now in the dataset

SEGMENT_FORMAT = 1
SUFFIX = ".seg"
_FSYNC_INTERVAL_S = 1.0


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot log a {type(value).__name__}")


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_iso, check_circular=False)


class LogUnavailable(Exception):
    """Rows could not be written to the local segment: the request must not be answered."""


def prediction_writer(url: str) -> Writer:
    """Write `kingmaker.logs.prediction_row` rows to the log at ``url`` as ``part-<name>.parquet`` (idempotent);
    the schema's features are the features of the rows' columns."""

    def write(rows: list[Row], name: str) -> int:
        columns: dict[str, None] = {}
        last: Any = None
        for row in rows:  # rows almost always share one key set: compare views, merge only on change
            keys = row.keys()
            if keys != last:
                columns.update(dict.fromkeys(keys))
                last = keys
        frame = pd.DataFrame({k: [r.get(k) for r in rows] for k in columns})  # columnar: ~3x faster than rows
        return logs.append_predictions(url, frame, logs.feature_names(columns), name=name)

    return write


def router_log(url: str, settings: ServingSettings, directory: Path, metrics: Metrics) -> SegmentLog:
    """The Router's prediction log at ``url``, its segments in ``directory``, as ``settings`` say, counted in
    ``metrics``."""
    rows = metrics.counter("kingmaker_prediction_log_rows")
    flush = metrics.histogram("kingmaker_prediction_log_flush_duration_seconds")
    written, failed, dropped = (rows.labels(outcome=o) for o in ("written", "failed", "dropped"))

    def on_written(n: int, seconds: float) -> None:
        written.inc(n)
        flush.observe(seconds)

    return SegmentLog(prediction_writer(url), directory, url, max_rows=settings.log_flush_rows,
                      max_delay_s=settings.log_flush_seconds, max_buffer_rows=settings.log_max_buffer_rows,
                      fsync=settings.log_fsync, on_written=on_written, on_failed=failed.inc, on_dropped=dropped.inc)


@dataclass
class Segment:
    """One segment file: its rows (None once released from memory: read back from the file) and request ids."""

    id: str
    path: Path
    opened_at: float
    rows: list[Row] | None = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    count: int = 0
    size: int = 0
    fd: int | None = None
    owner: str | None = None  # set for a segment taken over from a stopped Router


def read_segment(path: Path) -> tuple[dict[str, Any], list[Row], int]:
    """(header, rows, unreadable lines) of a segment file. Timestamps come back as ISO strings."""
    header: dict[str, Any] = {}
    rows: list[Row] = []
    bad = 0
    with open(path, "rb") as fh:
        for i, line in enumerate(fh):
            try:
                doc = json.loads(line)
            except ValueError:  # a line cut short by a machine crash
                bad += 1
                continue
            if i == 0:
                header = doc if isinstance(doc, dict) else {}
            elif isinstance(doc, dict):
                rows.append(doc)
            else:
                bad += 1
    return header, rows, bad


class SegmentLog:
    """Rows to local segments first, then to ``writer`` in the background; see the module docstring."""

    def __init__(self, writer: Writer, directory: Path, destination: str, *, max_rows: int = 2_000,
                 max_delay_s: float = 2.0, max_buffer_rows: int = 1_000_000, fsync: FsyncPolicy = FsyncPolicy.NEVER,
                 on_written: Callable[[int, float], None] | None = None,
                 on_failed: Callable[[int], None] | None = None, on_dropped: Callable[[int], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if max_rows < 1 or max_buffer_rows < max_rows:
            raise ValueError("need 1 <= max_rows <= max_buffer_rows")
        self._writer = writer
        self.directory = directory
        self.destination = destination
        self.max_rows = max_rows
        self.max_delay_s = max_delay_s
        self.max_buffer_rows = max_buffer_rows
        self.fsync = fsync
        self._on_written = on_written
        self._on_failed = on_failed
        self._on_dropped = on_dropped
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._move_lock = threading.Lock()  # one move at a time, so files keep arrival order
        self._closing = False
        self._closed = False
        self._failures = 0
        self._retry_at = 0.0
        self._seq = 0
        self._in_memory = 0
        self._current: Segment | None = None
        self._waiting: deque[Segment] = deque()  # closed segments, oldest first, not yet in the dataset
        self._owners: dict[str, list[int]] = {}  # stopped owners taken over: [lock fd, segments left]
        self.written = 0
        directory.mkdir(parents=True, exist_ok=True)
        self.owner = f"{time.time_ns():x}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._lock_path = directory / f"{self.owner}.lock"
        self._lock_fd = os.open(self._lock_path, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._take_over()
        self._thread = threading.Thread(target=self._run, name="prediction log mover", daemon=True)
        self._thread.start()

    # --- the request path ---------------------------------------------------------------------------
    def add(self, rows: Sequence[Row]) -> None:
        """Append ``rows`` (owned by the log from now on) to the current segment; `LogUnavailable` if they
        could not be written."""
        if not rows:
            return
        data = "".join([_ENCODER.encode(r) + "\n" for r in rows]).encode()
        with self._lock:
            if self._closing:
                raise RuntimeError("the prediction log is closed")
            seg = self._current or self._open()
            self._append(seg, data)
            seg.count += len(rows)
            seg.ids.extend(r["request_id"] for r in rows)
            assert seg.rows is not None  # the current segment is never released
            seg.rows.extend(rows)
            self._in_memory += len(rows)
            if seg.count >= self.max_rows:
                self._rotate()
                self._wake.notify()
            if self._in_memory > self.max_buffer_rows:
                self._release()

    def add_one(self, row: Row) -> None:
        self.add((row,))

    def _open(self) -> Segment:
        self._seq += 1
        seg_id = f"{self.owner}-{self._seq:08d}"
        path = self.directory / f"{seg_id}{SUFFIX}"
        header = _ENCODER.encode({"kingmaker_segment": SEGMENT_FORMAT, "destination": self.destination}) + "\n"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        except OSError as exc:
            raise LogUnavailable(f"cannot create a segment in {self.directory}: {exc.strerror or exc}") from exc
        seg = Segment(seg_id, path, self._clock(), fd=fd)
        try:
            self._append(seg, header.encode())
            if self.fsync is not FsyncPolicy.NEVER:  # the new file's directory entry survives a machine crash
                _fsync_dir(self.directory)
        except (LogUnavailable, OSError):
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._current = seg
        return seg

    def _append(self, seg: Segment, data: bytes) -> None:
        assert seg.fd is not None
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(seg.fd, view):]
            if self.fsync is FsyncPolicy.ALWAYS:
                os.fsync(seg.fd)
        except OSError as exc:
            with contextlib.suppress(OSError):  # take back a partial line, so the file stays whole lines
                os.ftruncate(seg.fd, seg.size)
            raise LogUnavailable(f"cannot append to {seg.path}: {exc.strerror or exc}") from exc
        seg.size += len(data)

    def _release(self) -> None:
        """Over ``max_buffer_rows`` in memory: the oldest waiting segments keep only their files."""
        for seg in self._waiting:
            if self._in_memory <= self.max_buffer_rows:
                return
            if seg.rows:
                self._in_memory -= len(seg.rows)
                seg.rows = None

    # --- reading the state ------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Rows not yet in the dataset (of segments taken over from a stopped Router: those read so far)."""
        with self._lock:
            return sum(s.count for s in (*self._waiting, *([self._current] if self._current else [])))

    @property
    def lag_seconds(self) -> float:
        """Age of the oldest row not yet in the dataset; 0 when there is none."""
        with self._lock:
            opened = [s.opened_at for s in (*self._waiting, *([self._current] if self._current else []))
                      if s.count or s.rows is None]
            return max(0.0, self._clock() - min(opened)) if opened else 0.0

    def pending_ids(self) -> set[str]:
        """The request ids of every row not yet in the dataset."""
        with self._lock:
            segments = [*self._waiting, *([self._current] if self._current else [])]
            return {i for s in segments for i in s.ids}

    # --- moving segments into the dataset -------------------------------------------------------------
    def _due(self) -> bool:
        seg = self._current
        return seg is not None and seg.count > 0 and (
            seg.count >= self.max_rows or self._clock() - seg.opened_at >= self.max_delay_s)

    def _rotate(self) -> None:
        """Under the lock: the current segment is closed for new rows and waits to be moved (`_seal` closes its
        file, off the request path)."""
        seg = self._current
        if seg is None:
            return
        self._current = None
        if seg.count:
            self._waiting.append(seg)
        else:
            self._seal(seg)
            seg.path.unlink(missing_ok=True)

    def _seal(self, seg: Segment) -> None:
        """Close a rotated segment's file, forced to disk first unless the policy is ``never`` (``always`` has
        already synced every append)."""
        if seg.fd is None:
            return
        with contextlib.suppress(OSError):
            if self.fsync is FsyncPolicy.INTERVAL:
                os.fsync(seg.fd)
            os.close(seg.fd)
        seg.fd = None

    def _wait_s(self, next_sync: float) -> float:
        """Under the lock: 0 when there is work now (rotate, retry a move, fsync), else how long to sleep."""
        now = self._clock()
        if self._closing or self._due():
            return 0.0
        waits = [self.max_delay_s]
        if self._current is not None and self._current.count:
            waits.append(self.max_delay_s - (now - self._current.opened_at))
        if self._waiting:
            waits.append(self._retry_at - now)
        if self.fsync is FsyncPolicy.INTERVAL:
            waits.append(next_sync - now)
        return max(0.0, min(waits))

    def _run(self) -> None:
        next_sync = self._clock() + _FSYNC_INTERVAL_S
        while True:
            sync_fd = None
            with self._lock:
                while (wait := self._wait_s(next_sync)) > 0:
                    self._wake.wait(wait)
                if self._closing:
                    return
                if self._due():
                    self._rotate()
                if self.fsync is FsyncPolicy.INTERVAL and self._clock() >= next_sync:
                    next_sync = self._clock() + _FSYNC_INTERVAL_S
                    if self._current is not None and self._current.fd is not None:
                        sync_fd = os.dup(self._current.fd)  # synced outside the lock: add() is never held up
            if sync_fd is not None:
                with contextlib.suppress(OSError):
                    os.fsync(sync_fd)
                os.close(sync_fd)
            self._move(respect_backoff=True)

    def _move(self, *, respect_backoff: bool) -> int:
        """Move waiting segments, oldest first, until one fails. Returns rows moved."""
        moved = 0
        with self._move_lock:
            while True:
                with self._lock:
                    if not self._waiting or (respect_backoff and self._clock() < self._retry_at):
                        return moved
                    seg = self._waiting[0]
                    rows = seg.rows
                self._seal(seg)
                started = time.perf_counter()
                try:
                    if rows is None:
                        rows = self._read_back(seg)
                    n = self._writer(rows, seg.id)
                except Exception as exc:  # any store error (fsspec backends raise many types): keep it, retry
                    self._failures += 1
                    self._retry_at = self._clock() + min(30.0, 0.5 * 2 ** min(self._failures, 6))
                    log.warning("prediction log: moving segment %s (%d rows) failed (attempt %d): %s", seg.id,
                                seg.count, self._failures, exc)
                    if self._on_failed:
                        self._on_failed(seg.count)
                    return moved
                seg.path.unlink(missing_ok=True)
                with self._lock:
                    self._waiting.popleft()
                    if seg.rows is not None:
                        self._in_memory -= len(seg.rows)
                self._finish_owner(seg.owner)
                self._failures = 0
                self._retry_at = 0.0
                self.written += n
                moved += n
                if self._on_written:
                    self._on_written(n, time.perf_counter() - started)

    def _read_back(self, seg: Segment) -> list[Row]:
        header, rows, bad = read_segment(seg.path)
        if header.get("kingmaker_segment") != SEGMENT_FORMAT:
            raise ValueError(f"{seg.path} is not a format-{SEGMENT_FORMAT} segment")
        if bad:
            log.error("prediction log: %d line(s) of %s could not be read (cut short by a crash): dropped", bad,
                      seg.path)
            if self._on_dropped:
                self._on_dropped(bad)
        with self._lock:
            seg.count = len(rows)
            seg.ids = [str(r.get("request_id")) for r in rows]
        return rows

    # --- taking over after a crash --------------------------------------------------------------------
    def _take_over(self) -> None:
        """Queue the segments of stopped Routers that logged to our destination (see the module docstring)."""
        by_owner: dict[str, list[Path]] = {}
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            by_owner.setdefault(path.stem.rsplit("-", 1)[0], []).append(path)
        for lock in self.directory.glob("*.lock"):
            by_owner.setdefault(lock.stem, [])
        for owner, paths in sorted(by_owner.items()):
            if owner == self.owner:
                continue
            fd = os.open(self.directory / f"{owner}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # its Router is alive (or another one is taking it over)
                os.close(fd)
                continue
            destinations = {read_header(p).get("destination") for p in paths}
            if paths and destinations != {self.destination}:
                log.warning("prediction log: %d segment(s) of %s in %s belong to %s, not %s: left alone",
                            len(paths), owner, self.directory, sorted(map(str, destinations)), self.destination)
                os.close(fd)
                continue
            if not paths:
                (self.directory / f"{owner}.lock").unlink(missing_ok=True)
                os.close(fd)
                continue
            log.info("prediction log: taking over %d segment(s) of a stopped Router (%s) in %s", len(paths), owner,
                     self.directory)
            self._owners[owner] = [fd, len(paths)]
            for path in paths:
                age = max(0.0, time.time() - path.stat().st_mtime)
                self._waiting.append(Segment(path.stem, path, self._clock() - age, rows=None, owner=owner))

    def _finish_owner(self, owner: str | None) -> None:
        if owner is None or owner not in self._owners:
            return
        entry = self._owners[owner]
        entry[1] -= 1
        if entry[1] == 0:
            (self.directory / f"{owner}.lock").unlink(missing_ok=True)
            os.close(entry[0])
            del self._owners[owner]

    # --- stopping -----------------------------------------------------------------------------------
    def flush(self) -> int:
        """Close the current segment and move everything waiting now, in the caller's thread."""
        with self._lock:
            self._rotate()
        return self._move(respect_backoff=False)

    def close(self, retries: int = 3) -> None:
        """Stop the mover and move what is left (retrying a few times). Rows that still cannot be moved stay in
        their segments, and the next Router on this folder moves them."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._wake.notify_all()
            self._rotate()
        self._thread.join()
        for attempt in range(retries + 1):
            self._move(respect_backoff=False)
            if not self._waiting:
                break
            time.sleep(min(2.0, 0.2 * 2**attempt))
        for fd, _ in self._owners.values():
            os.close(fd)
        self._owners.clear()
        if self._waiting:
            log.error("prediction log: %d rows could not be moved at shutdown; they stay in %s for the next Router",
                      self.pending, self.directory)
        else:
            self._lock_path.unlink(missing_ok=True)
        os.close(self._lock_fd)
        self._closed = True


def read_header(path: Path) -> dict[str, Any]:
    """The first line of a segment (its format and destination); {} if it cannot be read."""
    try:
        with open(path, "rb") as fh:
            doc = json.loads(fh.readline())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
