"""A real Prometheus and a real Pushgateway (`kingmaker.localstack`, Debian's packages installed by .ci/test) that
fail the test when missing, the shared HTTP client and `running` re-exported, and `FakeRouter`, a metrics endpoint
serving the Router's guardrail series for Prometheus to scrape."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, start_http_server

from kingmaker import localstack
from kingmaker.catalog import CATALOG, create
from kingmaker.localstack import PrometheusHTTP, free_port, running

__all__ = ["FakeRouter", "PrometheusHTTP", "prometheus", "pushgateway", "running"]


@contextlib.contextmanager
def pushgateway(folder: Path) -> Iterator[str]:
    """`kingmaker.localstack.pushgateway`; a missing binary fails the test."""
    try:
        with localstack.pushgateway(folder) as url:
            yield url
    except localstack.MissingTool as exc:
        pytest.fail(f"{exc}; .ci/test installs it")


@contextlib.contextmanager
def prometheus(folder: Path, config: dict[str, Any]) -> Iterator[str]:
    """`kingmaker.localstack.prometheus`; a missing binary fails the test."""
    try:
        with localstack.prometheus(folder, config) as url:
            yield url
    except localstack.MissingTool as exc:
        pytest.fail(f"{exc}; .ci/test installs it")


class FakeRouter:
    """A /metrics endpoint on 127.0.0.1 with the Router's upstream series (the catalog's names) for a challenger,
    model version 2, with a given error share and latency; 4 times a second it adds 200 calls (and noise the
    guardrail queries must leave out). Use it as a context manager."""

    def __init__(self, error_share: float, latency: float):
        self.registry = CollectorRegistry()
        self.calls = create(CATALOG["kingmaker_router_upstream_requests"], self.registry)
        self.duration = create(CATALOG["kingmaker_router_upstream_duration_seconds"], self.registry)
        self.error_share, self.latency = error_share, latency
        self.port = free_port()
        self.server, _ = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)
        self._stop = threading.Event()
        threading.Thread(target=self._feed, daemon=True).start()

    def _feed(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(0.25)

    def tick(self) -> None:
        failed = round(200 * self.error_share)
        challenger = {"arm": "challenger", "model_version": "2"}
        self.calls.labels(**challenger, outcome="ok").inc(200 - failed)  # type: ignore[union-attr]
        self.calls.labels(**challenger, outcome="http_error").inc(failed)  # type: ignore[union-attr]
        self.calls.labels(**challenger, outcome="rejected").inc(3)  # type: ignore[union-attr]  # client's fault
        self.calls.labels(**challenger, outcome="shadow_skipped").inc(50)  # type: ignore[union-attr]  # not calls
        self.calls.labels(arm="challenger", model_version="1", outcome="timeout").inc(100)  # type: ignore[union-attr]  # old version
        self.calls.labels(arm="champion", model_version="1", outcome="timeout").inc(100)  # type: ignore[union-attr]  # other arm
        for _ in range(20):
            self.duration.labels(**challenger).observe(self.latency)  # type: ignore[union-attr]
        self.duration.labels(arm="challenger", model_version="1").observe(2.0)  # type: ignore[union-attr]
        self.duration.labels(arm="champion", model_version="1").observe(2.0)  # type: ignore[union-attr]

    def __enter__(self) -> FakeRouter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
