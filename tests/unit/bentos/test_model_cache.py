"""A Scorer through a registry outage (`bentos.model_cache`): the cache slot, and the in-process Scorer
starting with its tracking server unreachable, with and without a cached copy."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from bentos import model_cache
from bentos.procs import free_port
from kingmaker.errors import PermanentError, TemporaryError
from kingmaker.settings import MlflowSettings

from .conftest import Registry, row, scorer

URI = "models:/fraud-detector@champion"


def test_fetch_caches_the_resolved_version_and_a_new_copy_replaces_it_whole(scorer_env: Registry,
                                                                            tmp_path: Path) -> None:
    cache = model_cache.ModelCache(tmp_path / "cache")
    client = MlflowSettings.from_env().client()
    assert cache.cached(URI) is None
    model = model_cache.fetch(client, URI, cache)
    first = cache.cached(URI)
    assert first is not None and first.ref == model.ref and first.ref.alias == "champion"
    assert (first.path / "MLmodel").is_file()
    loaded = model_cache.from_cache(cache, URI)
    assert loaded is not None and loaded[0].ref.version == scorer_env.versions["champion"]

    model_cache.fetch(client, URI, cache)  # again: the slot is replaced, nothing else is left behind
    second = cache.cached(URI)
    assert second is not None and second.cached_at > first.cached_at
    assert sorted(p.name for p in (tmp_path / "cache" / "fraud-detector").iterdir()) == ["champion"]
    assert cache.cached("models:/fraud-detector@challenger") is None  # another reference, another slot


def test_an_unreadable_slot_is_ignored(tmp_path: Path) -> None:
    cache = model_cache.ModelCache(tmp_path)
    slot = tmp_path / "fraud-detector" / "champion"
    slot.mkdir(parents=True)
    (slot / model_cache.REF_FILE).write_text("{not json")
    assert cache.cached(URI) is None
    assert model_cache.from_cache(cache, URI) is None
    assert model_cache.from_cache(None, URI) is None


def test_the_retry_calls_until_the_registry_answers() -> None:
    calls: list[int] = []
    failures: list[str] = []
    done = threading.Event()

    def attempt() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise TemporaryError(f"down {len(calls)}")
        done.set()

    retry = model_cache.RegistryRetry(attempt, 0.01, lambda exc: failures.append(str(exc))).start()
    assert done.wait(5)
    retry._thread.join(5)
    assert not retry._thread.is_alive()
    assert (len(calls), failures) == (3, ["down 1", "down 2"])

    def permanent() -> None:
        calls.append(1)
        raise PermanentError("gone")

    calls.clear()
    retry = model_cache.RegistryRetry(permanent, 0.01).start()
    retry._thread.join(5)
    assert not retry._thread.is_alive() and len(calls) == 1  # a reference that names nothing is not retried



@pytest.mark.anyio
async def test_a_scorer_serves_its_cached_version_while_the_registry_is_unreachable(
        scorer_env: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    async with scorer(monkeypatch, KINGMAKER_MODEL_CACHE=cache) as (_, c):  # the registry is up: it caches
        info = (await c.post("/info", json={})).json()
        expected = (await c.post("/score", json={"features": row(4)})).json()["score"]
    assert info["model_source"] == "registry" and info["cached_at"] is None

    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    async with scorer(monkeypatch, KINGMAKER_MODEL_CACHE=cache, MLFLOW_TRACKING_URI=down,
                      KINGMAKER_REGISTRY_RETRY_SECONDS="3600") as (_, c):
        assert (await c.get("/readyz")).status_code == 200
        info = (await c.post("/info", json={})).json()
        scored = (await c.post("/score", json={"features": row(4)})).json()
        metrics = (await c.get("/metrics")).text
    version = scorer_env.versions["champion"]
    assert (info["model_source"], info["model_version"], info["alias"]) == ("cache", version, "champion")
    assert info["cached_at"] > 0 and down in info["registry_error"]
    assert scored["model_version"] == version and scored["score"] == expected
    assert (f'kingmaker_scorer_model_from_cache{{arm="champion",model_name="fraud-detector",'
            f'model_version="{version}"}} 1.0') in metrics


@pytest.mark.anyio
async def test_without_a_cached_copy_the_scorer_stays_unready_and_refuses_with_503(
        scorer_env: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    down = f"http://127.0.0.1:{free_port()}"
    async with scorer(monkeypatch, KINGMAKER_MODEL_CACHE=str(tmp_path / "empty"), MLFLOW_TRACKING_URI=down,
                      KINGMAKER_REGISTRY_RETRY_SECONDS="3600") as (_, c):
        assert (await c.get("/readyz")).status_code == 503
        assert (await c.get("/livez")).status_code == 200
        for path, body in (("/score", {"features": row(1)}), ("/info", {}),
                           ("/score_batch", {"rows": [row(1)]})):
            r = await c.post(path, json=body)
            assert (r.status_code, r.json()["code"]) == (503, "not_ready"), (path, r.text)
    lines = [r.getMessage() for r in caplog.records if "NOT READY" in r.getMessage()]
    assert len(lines) == 1 and "no cached copy of models:/fraud-detector@champion" in lines[0], lines
