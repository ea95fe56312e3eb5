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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bentos import procs
from bentos.procs import ServiceProcess
from tests.conftest import PATIENT


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
            "KINGMAKER_LOG_SEGMENT_DIR": str(work / "segments"),
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
    config_path.write_text(yaml.safe_dump({"mode": "split", "challenger_weight": 0.1, **PATIENT, "salt": "it", **config}))
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


def write_matured_traffic(predictions_url: str, labels_url: str, *, champion: str, challenger: str, better: bool,
                          mode: str = "shadow", n: int = 2500, seed: int = 11, model: str = "fraud-detector") -> None:
    """Labelled traffic 4 h to 1 h old (matured under a 1 h label delay): transactions from the synthetic
    generator whose challenger scores separate frauds far better (or far worse) than the champion's. Shadow:
    every request on both arms; split: each request on one arm, half to the challenger."""
    import numpy as np
    import pandas as pd

    from kingmaker import logs
    from training.data import synthetic

    ds = synthetic(rows=n, seed=seed, fraud_rate=0.02)
    rng = np.random.default_rng(seed)
    y = ds.y.astype(float)
    shared = rng.standard_normal(n)

    def scores(separation: float) -> np.ndarray:
        latent = separation * y + np.sqrt(0.85) * shared + np.sqrt(0.15) * rng.standard_normal(n)
        return 1.0 / (1.0 + np.exp(-(latent - 4.0)))

    a, b = (scores(1.0), scores(3.5)) if better else (scores(3.5), scores(1.0))
    on_challenger = rng.random(n) < 0.5 if mode == "split" else np.ones(n, dtype=bool)
    on_champion = ~on_challenger if mode == "split" else np.ones(n, dtype=bool)
    start = datetime.now(UTC) - timedelta(hours=4)
    ts = pd.Series([start + timedelta(seconds=float(i)) for i in np.linspace(0, 3 * 3600, n)])
    ids = [f"req-{seed}-{i}" for i in range(n)]
    requests = pd.DataFrame({"request_id": ids, "ts": ts, "routing_key": ds.frame["customer_id"],
                             **{logs.feature_column(f): ds.frame[f].to_numpy() for f in ds.features}})
    frames = [requests[rows].assign(arm=arm, served=arm == "champion" or mode == "split", mode=mode, model_name=model,
                                    model_version=version, score=s[rows], decision=s[rows] > 0.5, threshold=0.5,
                                    latency_ms=3.0)
              for arm, version, s, rows in (("champion", champion, a, on_champion),
                                            ("challenger", challenger, b, on_challenger))]
    logs.append_predictions(predictions_url, pd.concat(frames, ignore_index=True), ds.features)
    logs.append_labels(labels_url, pd.DataFrame({"request_id": ids, "label": ds.y, "label_ts": ts + timedelta(minutes=5)}))


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


def start_serve(home: Path, tmp_path: Path, *args: str, env: dict[str, str] | None = None
                ) -> tuple[subprocess.Popen[str], dict[str, str], str]:
    """`kingmaker serve --port 0` as a real process; returns it, the URLs it printed, and its start-up text."""
    env = {**os.environ, "KINGMAKER_HOME": str(home), "BENTOML_HOME": str(tmp_path / "bentoml"),
           "KINGMAKER_PREDICTIONS_URL": str(tmp_path / "predictions"), "KINGMAKER_LABELS_URL": str(tmp_path / "labels"),
           "KINGMAKER_FEEDBACK_TOKEN": "", "KINGMAKER_FEEDBACK_TOKEN_FILE": "", **(env or {})}
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


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the series of a /metrics text named ``name`` that carry ``labels`` (0 when there is none)."""
    want = {f'{k}="{v}"' for k, v in labels.items()}
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name):len(name) + 1] in ("{", " "):
            inside = line[line.find("{") + 1:line.find("}")] if "{" in line else ""
            if want <= set(inside.split(",")):
                total += float(line.rsplit(" ", 1)[1])
    return total
