"""A real Prometheus and a real Pushgateway (Debian's ``prometheus`` and ``prometheus-pushgateway``, installed by
.ci/test) as local processes on free 127.0.0.1 ports, a small client for Prometheus's HTTP API, `running`, which
they and other foreground processes of the tests run under, and `FakeRouter`, a metrics endpoint serving the
Router's guardrail series for Prometheus to scrape."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, start_http_server

from bentos.procs import free_port
from kingmaker.catalog import CATALOG, create


def _binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (apt-get install {package}; .ci/test does)")
    return path


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/-/ready", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{url} did not start (see {log})")
        time.sleep(0.1)


@contextlib.contextmanager
def running(args: list[str], log: Path, *, env: dict[str, str] | None = None, ready_url: str | None = None,
            stop: signal.Signals = signal.SIGTERM) -> Iterator[subprocess.Popen[bytes]]:
    """A local process with its output in ``log``, ready once ``ready_url``/-/ready answers 200 (if given),
    stopped with ``stop`` (killed if it takes more than two minutes)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            if ready_url is not None:
                _wait_ready(ready_url, proc, log)
            yield proc
        finally:
            proc.send_signal(stop)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def pushgateway(folder: Path) -> Iterator[str]:
    """A Pushgateway holding its metrics in memory only; yields its URL. (Debian's build persists to
    /var/lib/prometheus/pushgateway.data by default: every run on the machine would start with the groups an
    earlier one pushed.)"""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    binary = _binary("prometheus-pushgateway", "prometheus-pushgateway")
    with running([binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="],
                 folder / "pushgateway.log", ready_url=url):
        yield url


@contextlib.contextmanager
def prometheus(folder: Path, config: dict[str, Any]) -> Iterator[str]:
    """A Prometheus with ``config`` (prometheus.yml as a mapping) and its TSDB in ``folder``; yields its URL."""
    port = free_port()
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{port}"
    binary = _binary("prometheus", "prometheus")
    with running([binary, f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
                  f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"], folder / "prometheus.log",
                 ready_url=url):
        yield url


class PrometheusHTTP:
    """The HTTP API calls the tests need; an error answer raises with Prometheus's own message."""

    def __init__(self, url: str):
        self.http = httpx.Client(base_url=url, timeout=30.0)

    def _get(self, path: str, **params: Any) -> Any:
        body = self.http.get(path, params=params).json()
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/query", query=expr)["result"])

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/query_range", query=expr, start=start, end=end, step=step)["result"])

    def label_values(self, label: str, match: str, start: float, end: float) -> list[str]:
        return list(self._get(f"/api/v1/label/{label}/values", **{"match[]": match}, start=start, end=end))

    def alerts(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/alerts")["alerts"])

    def rules(self) -> list[dict[str, Any]]:
        return [r for g in self._get("/api/v1/rules")["groups"] for r in g["rules"]]

    def close(self) -> None:
        self.http.close()


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
