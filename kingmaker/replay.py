"""Replays held-out transactions through the Router as live traffic, in time order, and sends each one's label to
``/feedback`` a simulated delay after its request was answered.

`Replay` posts batches of rows to ``/predict_batch`` (each row is routed, scored and logged one by one) from a few
concurrent workers that take the batches in order, so requests reach the Router in the data's time order up to
the few batches in flight. Every row of a batch without a 2xx answer, or with no answer at all, counts as failed.
Labels wait in a queue ordered by the time their request was answered and go out once ``label_delay_s`` old.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class ReplayCounts:
    """What the replay did so far (read by the progress bar and the report)."""

    sent: int = 0  # rows with an answer (any status)
    ok: int = 0  # rows answered 2xx
    failed: int = 0  # rows answered non-2xx or not at all
    labels_sent: int = 0
    label_failures: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # "503", "ConnectError" ... -> rows
    started: float = field(default_factory=time.monotonic)

    def rate(self) -> float:
        return self.sent / max(time.monotonic() - self.started, 1e-9)

    def fail(self, what: str, rows: int) -> None:
        self.failed += rows
        self.errors[what] = self.errors.get(what, 0) + rows


@dataclass(frozen=True)
class Row:
    request_id: str
    features: dict[str, float]
    label: int


def batches(rows: Sequence[Row], size: int) -> list[list[Row]]:
    return [list(rows[i:i + size]) for i in range(0, len(rows), size)]


class Replay:
    """Sends ``rows`` (in order) to ``router`` until they run out or `stop` is called."""

    def __init__(self, router: str, token: str, rows: Sequence[Row], *, batch_rows: int = 100, concurrency: int = 2,
                 label_delay_s: float = 10.0, on_progress: Callable[[ReplayCounts], None] = lambda counts: None):
        self.router, self.token = router, token
        self.queue = deque(batches(rows, batch_rows))
        self.concurrency = concurrency
        self.label_delay_s = label_delay_s
        self.on_progress = on_progress
        self.counts = ReplayCounts()
        self.pending: deque[tuple[float, dict[str, Any]]] = deque()  # (answered at, label) in answer order
        self.stopping = asyncio.Event()
        self.timeline: list[tuple[float, int]] = []  # (wall time, rows answered so far)

    def stop(self) -> None:
        self.stopping.set()

    @property
    def exhausted(self) -> bool:
        return not self.queue

    async def run(self) -> ReplayCounts:
        limits = httpx.Limits(max_connections=self.concurrency + 1, max_keepalive_connections=self.concurrency + 1)
        async with httpx.AsyncClient(timeout=60.0, limits=limits) as http:
            labeller = asyncio.create_task(self._labels(http))
            await asyncio.gather(*(self._send(http) for _ in range(self.concurrency)))
            self.stopping.set()
            await labeller
        return self.counts

    async def _send(self, http: httpx.AsyncClient) -> None:
        while self.queue and not self.stopping.is_set():
            batch = self.queue.popleft()
            body = {"rows": [{"request_id": r.request_id, "features": r.features} for r in batch]}
            try:
                answer = await http.post(f"{self.router}/predict_batch", json=body)
            except httpx.HTTPError as exc:
                self.counts.fail(type(exc).__name__, len(batch))
            else:
                if 200 <= answer.status_code < 300:
                    self.counts.ok += len(batch)
                    now = time.time()
                    self.pending.extend((now, {"request_id": r.request_id, "label": r.label}) for r in batch)
                else:
                    self.counts.fail(str(answer.status_code), len(batch))
            self.counts.sent += len(batch)
            self.timeline.append((time.time(), self.counts.sent))
            self.on_progress(self.counts)

    async def _labels(self, http: httpx.AsyncClient) -> None:
        """Every half second: the labels of requests answered ``label_delay_s`` ago or earlier; at the end, all
        labels still waiting (after their delay)."""
        headers = {"Authorization": f"Bearer {self.token}"}
        while True:
            done = self.stopping.is_set()
            if done and self.pending:
                await asyncio.sleep(max(0.0, self.pending[-1][0] + self.label_delay_s - time.time()))
            cutoff = time.time() - self.label_delay_s
            due: list[dict[str, Any]] = []
            while self.pending and self.pending[0][0] <= cutoff:
                due.append(self.pending.popleft()[1])
            for i in range(0, len(due), 2000):
                chunk = due[i:i + 2000]
                try:
                    answer = await http.post(f"{self.router}/feedback", json={"labels": chunk}, headers=headers)
                    answer.raise_for_status()
                    self.counts.labels_sent += len(chunk)
                except httpx.HTTPError:
                    self.counts.label_failures += len(chunk)
            if done and not self.pending:
                return
            await asyncio.sleep(0.5)
