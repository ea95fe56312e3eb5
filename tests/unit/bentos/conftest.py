"""Fixtures for the serving tests: a tiny registered XGBoost model in a temporary MLflow (SQLite)
store, and an in-process ASGI client (BentoML's ``to_asgi()`` with its lifespan run by hand, since
Starlette's TestClient now wants the separate ``httpx2`` package)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import prometheus_client  # noqa: F401  (before PROMETHEUS_MULTIPROC_DIR is set: see scorer_env)

# BentoML's home (read when bentoml is first used) goes to a throwaway folder.
os.environ.setdefault("BENTOML_HOME", tempfile.mkdtemp(prefix="kingmaker-test-bentoml-"))

import httpx
import numpy as np
import pandas as pd
import pytest

from kingmaker.mlflow_errors import BOUNDED_HTTP
from tests.conftest import PATIENT, mlflow_store

FEATURES = ["amount", "f01", "f02", "f03", "f04", "f05"]


@dataclass(frozen=True)
class Registry:
    home: Path
    tracking_uri: str
    name: str
    versions: dict[str, str]  # alias -> version


def make_frame(rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.standard_normal((rows, len(FEATURES))), columns=FEATURES)
    x["amount"] = np.round(np.exp(rng.normal(3.5, 1.0, rows)), 2)
    logit = -3.0 + 1.5 * x["f01"] + x["f02"] * x["f03"] + 0.3 * (np.log(x["amount"]) - 3.5)
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return x, y.to_numpy()


def register_xgboost(client: Any, experiment_id: str, name: str, alias: str, seed: int, n_trees: int = 20) -> str:
    """Fit a small XGBoost model, save it the way training does, register it and point ``alias`` at it."""
    from xgboost import XGBClassifier

    from kingmaker import models

    x, y = make_frame(2_000, seed)
    model = XGBClassifier(n_estimators=n_trees, max_depth=3, random_state=seed, n_jobs=1).fit(x, y)
    run = client.create_run(experiment_id)
    with tempfile.TemporaryDirectory() as tmp:
        path = models.save(model, Path(tmp) / "model", flavor="xgboost", signature=models.signature(x),
                           input_example=x.head(2), threshold=0.3, features=FEATURES)
        version, _ = models.register(client, name, run.info.run_id, path, alias=alias)
    client.set_terminated(run.info.run_id)
    return version


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """``fraud-detector`` v1 (@champion) and v2 (@challenger): tiny XGBoost models, 6 features."""
    home = tmp_path_factory.mktemp("serving-home")
    client, exp, uri = mlflow_store(home, "serving-tests")
    versions = {alias: register_xgboost(client, exp, "fraud-detector", alias, seed)
                for alias, seed in (("champion", 1), ("challenger", 2))}
    return Registry(home=home, tracking_uri=uri, name="fraud-detector", versions=versions)


def row(seed: int = 0) -> dict[str, float]:
    x, _ = make_frame(1, seed)
    return {k: float(v) for k, v in x.iloc[0].items()}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _forget_bentoml_collectors() -> None:
    """BentoML's traffic-metrics middleware registers its collectors in prometheus_client's global
    registry the first time an app serves a request, so a second app in the same process would fail
    with DuplicateTimeseries. Under ``bentoml serve`` there is one app per process; here we unregister
    them once an app has set up (its metrics still work and are exported from the multiprocess files)."""
    from prometheus_client import REGISTRY

    for collector in list(REGISTRY._collector_to_names):
        names = REGISTRY._collector_to_names.get(collector, [])
        if any(n.startswith("bentoml_") for n in names):
            REGISTRY.unregister(collector)


@contextlib.asynccontextmanager
async def asgi_client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Run ``app``'s lifespan (start-up hooks, service __init__) around an httpx client bound to it."""
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    _forget_bentoml_collectors()  # in case an earlier app failed to start after registering them
    task = asyncio.create_task(app(scope, to_app.get, from_app.put))
    await to_app.put({"type": "lifespan.startup"})
    reply = asyncio.create_task(from_app.get())
    await asyncio.wait({task, reply}, return_when=asyncio.FIRST_COMPLETED)
    if not reply.done():
        reply.cancel()
        task.result()  # raises the start-up error
        raise RuntimeError("the app ended its lifespan without starting")
    if reply.result()["type"] != "lifespan.startup.complete":
        await task
        raise RuntimeError(f"service failed to start: {reply.result()}")
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            await client.get("/livez")  # BentoML's metrics middleware is set up by now ...
            _forget_bentoml_collectors()  # ... so the next app can set up its own
            yield client
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        await from_app.get()
        await task


@pytest.fixture(scope="session")
def empty_prometheus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prometheus-multiproc")


@pytest.fixture
def scorer_env(registry: Registry, monkeypatch: pytest.MonkeyPatch, empty_prometheus_dir: Path) -> Iterator[Registry]:
    """Environment for in-process services. BentoML's /metrics always reads a multiprocess directory, so
    it gets an empty one; prometheus_client was imported before (single-process mode, no mmap files),
    and the services append their own registry to /metrics."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(empty_prometheus_dir))
    monkeypatch.setenv("KINGMAKER_HOME", str(registry.home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("KINGMAKER_MODEL_URI", "models:/fraud-detector@champion")
    monkeypatch.setenv("KINGMAKER_ARM", "champion")
    for key, value in BOUNDED_HTTP.items():  # the Scorer sets them where unset: keep that out of other tests
        monkeypatch.setenv(key, value)
    yield registry


@contextlib.asynccontextmanager
async def scorer(monkeypatch: pytest.MonkeyPatch, arm: str = "champion", **env: str) -> AsyncIterator[
        tuple[Any, httpx.AsyncClient]]:
    """An in-process Scorer pointed at ``@<arm>`` (the registry fixture's store must be in the env)."""
    from bentos.scorer import Scorer

    monkeypatch.setenv("KINGMAKER_ARM", arm)
    monkeypatch.setenv("KINGMAKER_MODEL_URI", f"models:/fraud-detector@{arm}")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    app = cast(Any, Scorer).to_asgi()
    async with asgi_client(app) as client:
        yield app, client


async def wait_ready(client: httpx.AsyncClient, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (await client.get("/readyz")).status_code != 200:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("service did not become ready")
        await asyncio.sleep(0.02)


def metric(exposition: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``, parsed from a /metrics page."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for family in text_string_to_metric_families(exposition) for s in family.samples
               if s.name == name and labels.items() <= s.labels.items())


def stub_arm(arm: str, version: str, *, status: int = 200, delay_s: float = 0.0, value: float = 0.9,
             answer: dict[str, Any] | None = None) -> Any:
    """A fake Scorer (Starlette) for fault injection: fixed answers, a status code, a delay, or ``answer`` as
    the body of every 200. ``app.state.calls`` counts the scoring calls it received."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def info(_: Request) -> JSONResponse:
        return JSONResponse({"arm": arm, "model_name": "fraud-detector", "model_version": version, "alias": arm,
                             "run_id": "r", "flavor": "xgboost", "threshold": 0.5, "features": FEATURES,
                             "feature_types": ["double"] * len(FEATURES)})

    async def score(request: Request) -> JSONResponse:
        app.state.calls += 1
        body = await request.json()
        if delay_s:
            await asyncio.sleep(delay_s)
        if status != 200:
            return JSONResponse({"error": "injected"}, status_code=status)
        if answer is not None:
            return JSONResponse(answer)
        common = {"arm": arm, "model_name": "fraud-detector", "model_version": version, "threshold": 0.5}
        if request.url.path == "/score_batch":
            n = len(body["rows"])
            return JSONResponse({**common, "request_ids": body.get("request_ids") or [""] * n,
                                 "scores": [value] * n, "decisions": [value >= 0.5] * n})
        return JSONResponse({**common, "request_id": body.get("request_id"), "score": value,
                             "decision": value >= 0.5})

    app = Starlette(routes=[Route("/info", info, methods=["POST"]), Route("/score", score, methods=["POST"]),
                            Route("/score_batch", score, methods=["POST"])])
    app.state.calls = 0
    return app


@dataclass
class RouterHandle:
    client: httpx.AsyncClient
    predictions_url: str
    labels_url: str
    config_path: Path


@contextlib.asynccontextmanager
async def router(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, apps: dict[str, Any], config: dict[str, Any] | None = None,
                 *, champion_url: str = "http://champion", challenger_url: str = "http://challenger",
                 ready: bool = True, **env: str) -> AsyncIterator[RouterHandle]:
    """An in-process Router whose arm URLs in ``apps`` are served by those ASGI apps in this process;
    other URLs go over real TCP. Its logs go under ``tmp_path``; feedback token ``fb-token``."""
    import yaml
    from aiohttp_asgi_connector import ASGIApplicationConnector

    from bentos import arms
    from bentos import router as router_module

    def connector(url: str) -> Any:
        return (lambda: ASGIApplicationConnector(apps[url])) if url in apps else None

    monkeypatch.setattr(arms, "make_connector", connector)
    config_path = tmp_path / "router.yaml"
    # pairing off unless a test asks for it: in process, the arms share this event loop, and the off-path calls
    # would slow the answers the test times
    config_path.write_text(yaml.safe_dump({"mode": "split", "challenger_weight": 0.1, **PATIENT, "salt": "test",
                                           "pairing": "off", **(config or {})}))
    values = {"KINGMAKER_CHAMPION_URL": champion_url, "KINGMAKER_CHALLENGER_URL": challenger_url,
              "KINGMAKER_ROUTER_CONFIG": str(config_path), "KINGMAKER_FEEDBACK_TOKEN": "fb-token",
              "KINGMAKER_PREDICTIONS_URL": str(tmp_path / "predictions"),
              "KINGMAKER_LOG_SEGMENT_DIR": str(tmp_path / "segments"),
              "KINGMAKER_LABELS_URL": str(tmp_path / "labels"), **env}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    async with asgi_client(cast(Any, router_module.Router).to_asgi()) as client:
        if ready:
            await wait_ready(client)
        yield RouterHandle(client, values["KINGMAKER_PREDICTIONS_URL"], values["KINGMAKER_LABELS_URL"], config_path)


@contextlib.asynccontextmanager
async def both_arms(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[dict[str, Any]]:
    """Real in-process Scorers for @champion and @challenger, keyed by the URLs `router` expects."""
    async with scorer(monkeypatch, "champion") as (champion, _), scorer(monkeypatch, "challenger") as (challenger, _):
        yield {"http://champion": champion, "http://challenger": challenger}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
