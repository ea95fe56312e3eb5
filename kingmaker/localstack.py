"""The monitoring half of the local stack: a real Prometheus and a real Pushgateway (Debian's ``prometheus`` and
``prometheus-pushgateway``) as processes on free 127.0.0.1 ports, a small client for Prometheus's HTTP API, and
`ServingTargets`, the file_sd list that keeps Prometheus on the Router and the arms it routes to now.

Used by ``kingmaker demo`` and the integration tests, so both run the monitoring exactly the same way. A missing
binary is a `MissingTool` naming the Debian package: the demo goes on without that part, the tests fail.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

from kingmaker.errors import PermanentError


class MissingTool(PermanentError):
    """A binary the stack runs is not installed."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MissingTool(f"{name} is not installed (apt-get install {package})")
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
            raise PermanentError(f"{url} did not start (see {log})")
        time.sleep(0.1)


@contextlib.contextmanager
def running(args: list[str], log: Path, *, env: Mapping[str, str] | None = None, ready_url: str | None = None,
            stop: signal.Signals = signal.SIGTERM) -> Iterator[subprocess.Popen[bytes]]:
    """A local process with its output in ``log``, ready once ``ready_url``/-/ready answers 200 (if given),
    stopped with ``stop`` (killed if it takes more than two minutes)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=dict(env) if env is not None else None, stdout=out,
                                stderr=subprocess.STDOUT)
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
    exe = binary("prometheus-pushgateway", "prometheus-pushgateway")
    with running([exe, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="],
                 folder / "pushgateway.log", ready_url=url):
        yield url


@contextlib.contextmanager
def prometheus(folder: Path, config: Mapping[str, Any]) -> Iterator[str]:
    """A Prometheus with ``config`` (prometheus.yml as a mapping) and its TSDB in ``folder``; yields its URL."""
    exe = binary("prometheus", "prometheus")
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prometheus.yml").write_text(yaml.safe_dump(dict(config)))
    url = f"http://127.0.0.1:{port}"
    with running([exe, f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
                  f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"], folder / "prometheus.log",
                 ready_url=url):
        yield url


class PrometheusHTTP:
    """The calls of Prometheus's HTTP API the demo and the tests need; an error answer raises with Prometheus's
    own message."""

    def __init__(self, url: str):
        self.http = httpx.Client(base_url=url, timeout=30.0)

    def _get(self, path: str, **params: Any) -> Any:
        body = self.http.get(path, params=params).json()
        if body.get("status") != "success":
            raise PermanentError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr} if at is None else {"query": expr, "time": at}
        return list(self._get("/api/v1/query", **params)["result"])

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


class ServingTargets(threading.Thread):
    """Keeps Prometheus's file_sd list on the Router and the arms it routes to now (a re-pointed arm gets a new
    port: `kingmaker serve` writes it into router.yaml), with ``labels`` on every target: what the chart's
    ServiceMonitor relabelling gives in a cluster."""

    def __init__(self, router: str, config: Path, path: Path, labels: Mapping[str, str]):
        super().__init__(daemon=True)
        self.router, self.config, self.path, self.labels = router, config, path, dict(labels)
        self.stop = threading.Event()
        self.write()

    def write(self) -> None:
        doc = yaml.safe_load(self.config.read_text())
        arms = [doc.get(key) for key in ("champion_url", "challenger_url")]
        hosts = [u.removeprefix("http://") for u in (self.router, *(a for a in arms if a))]
        text = json.dumps([{"targets": sorted(hosts), "labels": self.labels}])
        if not self.path.exists() or self.path.read_text() != text:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(self.path)

    def run(self) -> None:
        while not self.stop.wait(1.0):
            with contextlib.suppress(OSError, yaml.YAMLError):  # read while being replaced
                self.write()
