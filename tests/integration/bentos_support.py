"""Helpers for the serving integration tests: real ``bentoml serve`` processes on free 127.0.0.1 ports,
models from the real ``kingmaker train`` (the shared ``trained_home`` fixture), and an async load
generator that records every answer."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bentos import procs
from bentos.procs import ServiceProcess


@dataclass
class Stack:
    champion: ServiceProcess
    challenger: ServiceProcess | None
    router: ServiceProcess
    config: Path
    predictions_url: str
    labels_url: str
    services: list[ServiceProcess] = field(default_factory=list)

    def stop_all(self) -> None:
        for s in reversed(self.services):
            s.stop(timeout=60)


def service_env(home: Path, work: Path) -> dict[str, str]:
    return {"KINGMAKER_HOME": str(home), "BENTOML_HOME": str(work / "bentoml"), "MLFLOW_TRACKING_URI": "",
            "KINGMAKER_PREDICTIONS_URL": str(work / "logs" / "predictions"),
            "KINGMAKER_LABELS_URL": str(work / "logs" / "labels"), "KINGMAKER_FEEDBACK_TOKEN": "it-token",
            "KINGMAKER_LOG_FLUSH_SECONDS": "1.0", "KINGMAKER_LOG_FLUSH_ROWS": "500"}


@contextlib.contextmanager
def serving_stack(home: Path, work: Path, config: dict[str, Any], *, challenger: bool = True,
                  env: dict[str, str] | None = None) -> Iterator[Stack]:
    """Champion and challenger Scorers and a Router as real processes; everything stopped afterwards."""
    work.mkdir(parents=True, exist_ok=True)
    env = {**service_env(home, work), **(env or {})}
    logs = work / "service-logs"
    logs.mkdir(exist_ok=True)
    config_path = work / "router.yaml"
    config_path.write_text(yaml.safe_dump({"salt": "it", **config}))
    champion = procs.scorer("champion", "models:/fraud-detector@champion", procs.free_port(), env=env, log_dir=logs)
    chall = (procs.scorer("challenger", "models:/fraud-detector@challenger", procs.free_port(), env=env, log_dir=logs)
             if challenger else None)
    router = procs.router(procs.free_port(), champion.url, chall.url if chall else "", config=config_path, env=env,
                          log_dir=logs)
    services = [s for s in (champion, chall, router) if s is not None]
    stack = Stack(champion, chall, router, config_path, env["KINGMAKER_PREDICTIONS_URL"], env["KINGMAKER_LABELS_URL"],
                  services)
    try:
        for s in services:
            s.start()
        for s in services:
            s.wait_ready(240)
        yield stack
    finally:
        for s in reversed(services):
            if s.running():
                s.stop(timeout=60)


def transactions(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """Realistic request bodies from the same generator training used (features + customer ids)."""
    from training import data

    ds = data.synthetic(rows=max(n, 500), seed=seed)  # small samples may hold no fraud, which data refuses
    frame = ds.frame.head(n)
    feats = frame[list(ds.features)].to_dict(orient="records")
    return [{"request_id": f"it-{seed}-{i}", "ids": {"customer_id": str(c)}, "features": f}
            for i, (c, f) in enumerate(zip(frame["customer_id"], feats, strict=True))]


@dataclass
class Outcome:
    body: dict[str, Any]
    status: int | None  # None: no HTTP answer (connection refused/reset)
    answer: dict[str, Any] | None
    headers: dict[str, str]
    error: str | None = None


async def fire(url: str, bodies: list[dict[str, Any]], *, concurrency: int = 16, stop_on_error: bool = False,
               on_progress: Any = None) -> list[Outcome]:
    """POST every body to ``url`` from ``concurrency`` workers; one `Outcome` per body that was sent."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    outcomes: list[Outcome] = []
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        async def worker() -> None:
            while not stop.is_set():
                try:
                    body = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    r = await client.post(url, json=body)
                    answer = r.json() if r.headers.get("content-type", "").startswith("application/json") else None
                    outcomes.append(Outcome(body, r.status_code, answer, dict(r.headers)))
                except httpx.HTTPError as exc:
                    outcomes.append(Outcome(body, None, None, {}, f"{type(exc).__name__}: {exc}"))
                    if stop_on_error:
                        stop.set()
                if on_progress is not None:
                    on_progress(len(outcomes))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return outcomes


def wait_until(predicate: Any, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="session")
def serving_home(trained_home: Path) -> Path:
    """The trained models (v1 XGBoost @champion, v2 scikit-learn @challenger) for serving tests."""
    assert (trained_home / "mlflow.db").exists()
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    return trained_home


def start_serve(home: Path, tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], dict[str, str], str]:
    """`kingmaker serve --port 0` as a real process; returns it, the URLs it printed, and its start-up text."""
    env = {**os.environ, "KINGMAKER_HOME": str(home), "BENTOML_HOME": str(tmp_path / "bentoml"),
           "KINGMAKER_PREDICTIONS_URL": str(tmp_path / "predictions"), "KINGMAKER_LABELS_URL": str(tmp_path / "labels"),
           "KINGMAKER_FEEDBACK_TOKEN": "", "KINGMAKER_FEEDBACK_TOKEN_FILE": ""}
    env.pop("MLFLOW_TRACKING_URI", None)
    exe = Path(sys.executable).with_name("kingmaker")
    proc = subprocess.Popen([str(exe), "serve", "--port", "0", *args], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Ctrl-C stops everything" in line:
            break
    text = "".join(lines)
    urls = dict(re.findall(r"^\s+(router|champion|challenger)\s+(http://127\.0\.0\.1:\d+)", text, re.M))
    return proc, urls, text
