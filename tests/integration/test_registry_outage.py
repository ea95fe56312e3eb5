"""Serving and promotion through a registry outage, on the production-shaped stores: the real ``mlflow server``
and its PostgreSQL (a private pair of this module, artifacts in SeaweedFS S3) are stopped while real Scorers, a
real Router and the real controller (`kingmaker promote`) run.

- A Scorer started while the registry is down serves its cached copy of the same reference: ready, answering
  the same scores, saying so in /info, its log and ``kingmaker_scorer_model_from_cache``; a Scorer without a
  copy stays unready with one clear line; both settle once the registry is back.
- The Router, re-pointed to the Scorer started during the outage, answers every request: no 5xx.
- The controller holds (``Reachable=False`` with the reason; no alias moves) and promotes once it is back.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from bentos import procs
from tests.integration.test_k8s_local import policy
from tests.integration.test_k8s_local import prometheus as prometheus  # the fixture: the guardrails' Prometheus

from . import stores
from .bentos_support import Outcome, fire, serving_stack, transactions, wait_until, write_matured_traffic
from .test_stores import run_cli

pytestmark = pytest.mark.integration

MODEL = "fraud-detector"


@dataclass
class Registered:
    registry: stores.Registry
    work: Path


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, object_store: stores.ObjectStore) -> Iterator[Registered]:
    """A tracking server + PostgreSQL of this module's own (the tests stop them), with v1 (XGBoost) @champion
    and v2 (logistic regression) @challenger trained by the real CLI through it."""
    work = tmp_path_factory.mktemp("outage")
    bucket = object_store.create_bucket(f"outage-{int(time.time())}")
    with stores.registry(work / "registry", object_store, bucket) as reg:
        common = ("train", "--data", "synthetic", "--rows", "6000", "--folds", "2", "--bootstrap", "10",
                  "--n-jobs", "1", "--tracking-uri", reg.server.url)
        run_cli(*common, "--seed", "1", "--candidates", "xgboost", env={}, out_dir=work, name="train-1")
        run_cli(*common, "--seed", "2", "--candidates", "logreg", env={}, out_dir=work, name="train-2")
        yield Registered(reg, work)


class Load:
    """Clients calling the Router from a background thread until stopped; every outcome kept."""

    def __init__(self, url: str, bodies: list[dict]):
        self.url, self.bodies, self.outcomes = url, bodies, list[Outcome]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            batch = [{**b, "request_id": f"load-{i}-{j}"} for j, b in enumerate(self.bodies)]
            self.outcomes += asyncio.run(fire(self.url, batch, concurrency=2))
            i += 1

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(120)

    def __exit__(self, *_: object) -> None:
        self.stop()


def _info(url: str) -> dict:
    r = httpx.post(f"{url}/info", json={}, timeout=10)
    r.raise_for_status()
    return dict(r.json())


def test_scorers_and_the_controller_ride_out_a_registry_outage(registered: Registered, prometheus: str,
                                                               tmp_path: Path) -> None:
    reg = registered.registry
    home = tmp_path / "home"
    cache = tmp_path / "model-cache"
    env = {**reg.server.env, "KINGMAKER_MODEL_CACHE": str(cache), "KINGMAKER_REGISTRY_RETRY_SECONDS": "2"}
    # the controller's evidence (shadow traffic of v1 and v2 where v2 ranks frauds far better, labels matured)
    # and the drift result it wants, written while the registry is up
    write_matured_traffic(str(home / "logs" / "predictions"), str(home / "logs" / "labels"), champion="1",
                          challenger="2", better=True)
    promote_env = {**reg.server.env, "KINGMAKER_HOME": str(home)}
    run_cli("drift", "--window", "6h", "--no-mlflow-log", "--output-dir", str(home / "drift" / "run"),
            env=promote_env, out_dir=tmp_path, name="drift")
    promote = ("promote", "--policy", str(policy(home)), "--prometheus-url", prometheus, "--prometheus-selector",
               'job="healthy"', "--guardrail-window", "20s", "--once")
    logs, bare_logs = tmp_path / "service-logs", tmp_path / "bare-logs"
    logs.mkdir()
    bare_logs.mkdir()

    with serving_stack(home, tmp_path / "serving", {"mode": "split", "challenger_weight": 0.3}, env=env) as stack:
        assert stack.challenger is not None
        before = _info(stack.champion.url)
        assert (before["model_version"], before["model_source"]) == ("1", "registry")
        assert {p.name for p in (cache / MODEL).iterdir()} == {"champion", "challenger"}
        probe = transactions(20, seed=5)
        expected = [httpx.post(f"{stack.champion.url}/score", json={"features": b["features"]}, timeout=10)
                    .json()["score"] for b in probe]

        with Load(f"{stack.router.url}/predict", transactions(40, seed=3)) as load:
            reg.stop()  # the tracking server and PostgreSQL: the registry is gone
            outage_started = time.monotonic()

            # a replacement champion Scorer (a new pod, the same cache volume) and one without a copy
            cached = procs.scorer("champion", f"models:/{MODEL}@champion", procs.free_port(), env=env,
                                  log_dir=logs).start()
            bare = procs.scorer("champion", f"models:/{MODEL}@champion", procs.free_port(),
                                env={**env, "KINGMAKER_MODEL_CACHE": str(tmp_path / "empty-cache")},
                                log_dir=bare_logs).start()
            try:
                cached.wait_ready(240)
                ready_seconds = time.monotonic() - outage_started
                info = _info(cached.url)
                assert (info["model_version"], info["model_source"], info["alias"]) == ("1", "cache", "champion")
                assert info["cached_at"] > 0 and reg.server.url in info["registry_error"]
                scores = [httpx.post(f"{cached.url}/score", json={"features": b["features"]}, timeout=10)
                          .json()["score"] for b in probe]
                assert scores == expected
                assert _from_cache(cached.url) == 1.0
                assert "serving the CACHED fraud-detector version 1" in (logs / "champion.log").read_text()

                # the Router moves to the Scorer started during the outage; the old one stops
                config = yaml.safe_load(stack.config.read_text())
                stack.config.write_text(yaml.safe_dump({**config, "champion_url": cached.url}))
                probed = _requests(cached.url)
                wait_until(lambda: _requests(cached.url) > probed + 20, 60, "the Router's calls to the new Scorer")
                stack.champion.stop(timeout=60)

                # the Scorer without a copy: alive, not ready, one line saying why
                wait_until(lambda: "NOT READY" in (bare_logs / "champion.log").read_text(), 120,
                           "the unready Scorer's line")
                assert bare.running() and not bare.is_ready()
                assert httpx.get(f"{bare.url}/livez", timeout=5).status_code == 200
                bare_log = (bare_logs / "champion.log").read_text()
                (line,) = [x for x in bare_log.splitlines() if "NOT READY" in x]
                assert f"no cached copy of models:/{MODEL}@champion" in line, line

                # the controller holds: fails the reconcile, records why, moves nothing
                started = time.monotonic()
                held = run_cli(*promote, env=promote_env, out_dir=tmp_path, name="promote-down", check=False)
                held_seconds = time.monotonic() - started
                assert held.returncode == 1 and "reconcile failed" in held.stdout, held.stdout + held.stderr
                status = json.loads((home / "controller" / f"{MODEL}.json").read_text())["status"]
                reachable = next(c for c in status["conditions"] if c["type"] == "Reachable")
                assert (reachable["status"], reachable["reason"]) == ("False", "TemporaryError"), reachable
                assert reg.server.url in reachable["message"] or "MLflow" in reachable["message"], reachable
                assert status["phase"] not in ("Promoted", "RolledBack", "Promoting", "RollingBack")
                outage_seconds = time.monotonic() - outage_started

                reg.start()  # the registry is back
                wait_until(lambda: _info(cached.url)["model_source"] == "registry", 60, "the cached copy confirmed")
                assert _from_cache(cached.url) == 0.0
                bare.wait_ready(120)
                assert _info(bare.url)["model_source"] == "registry"
                done = run_cli(*promote, env=promote_env, out_dir=tmp_path, name="promote-up")
                assert "PROMOTE (ChallengerBetter)" in done.stdout, done.stdout
            finally:
                load.stop()  # before the Scorers it calls go away
                cached.stop(timeout=60)
                bare.stop(timeout=60)

    from mlflow import MlflowClient

    aliases = MlflowClient(tracking_uri=reg.server.url, registry_uri=reg.server.url).get_registered_model(MODEL).aliases
    assert {k: str(v) for k, v in aliases.items()} == {"champion": "2", "previous-champion": "1"}
    status = json.loads((home / "controller" / f"{MODEL}.json").read_text())["status"]
    assert status["phase"] == "Promoted"
    assert next(c for c in status["conditions"] if c["type"] == "Reachable")["status"] == "True"

    codes = [o.status for o in load.outcomes]
    assert codes and all(c == 200 for c in codes), {c: codes.count(c) for c in set(codes)}
    print(f"\nregistry down {outage_seconds:.1f} s: a Scorer started during it was ready from its cache after "
          f"{ready_seconds:.1f} s; {len(codes)} requests through the Router, all 200; `kingmaker promote --once` "
          f"held in {held_seconds:.1f} s, then promoted v2 once the registry was back")



def _from_cache(url: str) -> float:
    """The Scorer's ``kingmaker_scorer_model_from_cache`` for the champion v1 (under ``bentoml serve`` a gauge
    carries the worker's pid as a label)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    (value,) = re.findall(r'^kingmaker_scorer_model_from_cache\{arm="champion",model_name="fraud-detector",'
                          r'model_version="1"[^}]*\} (\S+)$', text, re.MULTILINE)
    return float(value)


def _requests(url: str) -> float:
    """Every request the Scorer at ``url`` answered (``kingmaker_scorer_requests_total``, all series)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(r"^kingmaker_scorer_requests_total\{[^}]*\} (\S+)$", text, re.MULTILINE))
