"""The Scorer in-process (BentoML ``to_asgi()``): every endpoint, good and bad input."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from .conftest import FEATURES, Registry, make_frame, row, scorer

pytestmark = pytest.mark.anyio


def reference_scores(registry: Registry, x: np.ndarray, alias: str = "champion") -> np.ndarray:
    """What the registered model says in-process, for comparison with the service."""
    from mlflow import MlflowClient

    from kingmaker import models

    client = MlflowClient(tracking_uri=registry.tracking_uri, registry_uri=registry.tracking_uri)
    return models.load_uri(client, f"models:/fraud-detector@{alias}").predict_proba(x)


def arrow_body(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


async def test_score_reports_version_and_matches_the_model(scorer_env: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    features = row(3)
    async with scorer(monkeypatch) as (_, c):
        r = await c.post("/score", json={"features": features, "request_id": "tx-1"})
    assert r.status_code == 200
    body = r.json()
    assert body["request_id"] == "tx-1" and body["arm"] == "champion"
    assert body["model_name"] == "fraud-detector" and body["model_version"] == scorer_env.versions["champion"]
    assert r.headers["x-request-id"] == "tx-1" and r.headers["x-model-version"] == body["model_version"]
    assert r.headers["x-kingmaker-arm"] == "champion"
    expected = reference_scores(scorer_env, np.array([[features[f] for f in FEATURES]]))[0]
    assert body["score"] == pytest.approx(expected, abs=1e-6)
    assert body["decision"] == (body["score"] >= body["threshold"]) and body["threshold"] == 0.3


async def test_challenger_alias_resolves_to_its_own_version(scorer_env: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    async with scorer(monkeypatch, "challenger") as (_, c):
        r = await c.post("/score", json={"features": row(1)})
        info = (await c.post("/info", json={})).json()
    assert r.json()["model_version"] == scorer_env.versions["challenger"] != scorer_env.versions["champion"]
    assert len(r.json()["request_id"]) == 32  # generated
    assert info["alias"] == "challenger" and info["features"] == FEATURES
    assert info["feature_types"] == ["double"] * len(FEATURES) and info["flavor"] == "xgboost"


@pytest.mark.parametrize(("body", "loc", "fragment"), [
    ({"features": {**row(1), "zz": 1.0}}, ["features", "zz"], "unknown feature"),
    ({"features": {k: v for k, v in row(1).items() if k != "f02"}}, ["features", "f02"], "missing feature"),
    ({"features": {**row(1), "f01": "1.5"}}, ["features", "f01"], "must be a number, got string"),
    ({"features": {**row(1), "f01": True}}, ["features", "f01"], "must be a number, got boolean"),
    ({"features": {**row(1), "f01": None}}, ["features", "f01"], "must be a number, got null"),
    ({"features": row(1), "extra": 1}, ["extra"], "Extra inputs are not permitted"),
    ({"feature": row(1)}, ["features"], "Field required"),
    ({"features": row(1), "request_id": ""}, ["request_id"], "at least 1 character"),
])
async def test_bad_input_is_a_400_naming_the_field(scorer_env: Registry, monkeypatch: pytest.MonkeyPatch,
                                                   body: dict[str, Any], loc: list[str], fragment: str) -> None:
    async with scorer(monkeypatch) as (_, c):
        r = await c.post("/score", json=body)
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert any(d["loc"] == loc and fragment in d["msg"] for d in detail), detail


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
async def test_non_finite_numbers_are_refused(scorer_env: Registry, monkeypatch: pytest.MonkeyPatch, token: str) -> None:
    features = ", ".join(f'"{k}": {token if k == "f03" else v}' for k, v in row(1).items())
    async with scorer(monkeypatch) as (_, c):
        r = await c.post("/score", content=f'{{"features": {{{features}}}}}',
                         headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["detail"] == [{"loc": ["features", "f03"], "msg": r.json()["detail"][0]["msg"],
                                   "type": "finite_number"}]


async def test_malformed_json_and_wrong_shapes_are_4xx(scorer_env: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    async with scorer(monkeypatch) as (_, c):
        for content in (b"not json", b"[1, 2]", b'{"features": [1, 2]}', b'{"features": "x"}', b""):
            r = await c.post("/score", content=content, headers={"content-type": "application/json"})
            assert 400 <= r.status_code < 500, (content, r.status_code, r.text)


async def test_batch_scores_in_order(scorer_env: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    x, _ = make_frame(700, seed=9)  # above the off-loop threshold too
    rows = x.to_dict(orient="records")
    async with scorer(monkeypatch) as (_, c):
        r = await c.post("/score_batch", json={"rows": rows, "request_ids": [f"r{i}" for i in range(len(rows))]})
    assert r.status_code == 200
    body = r.json()
    assert body["request_ids"][:2] == ["r0", "r1"] and len(body["scores"]) == 700
    np.testing.assert_allclose(body["scores"], reference_scores(scorer_env, x[FEATURES].to_numpy()), atol=1e-6)
    assert body["decisions"] == [s >= body["threshold"] for s in body["scores"]]


async def test_batch_limits_and_problems(scorer_env: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    async with scorer(monkeypatch, KINGMAKER_MAX_BATCH_ROWS="5") as (_, c):
        r = await c.post("/score_batch", json={"rows": []})
        assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["rows"]
        r = await c.post("/score_batch", json={"rows": [row(i) for i in range(6)]})
        assert r.status_code == 413 and "limit of 5" in r.json()["error"]
        body = json.dumps({"rows": [row(0), {**row(1), "f04": math.inf}]})  # Python's json writes Infinity
        r = await c.post("/score_batch", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["rows", 1, "f04"]
        r = await c.post("/score_batch", json={"rows": [row(0)], "request_ids": ["a", "b"]})
        assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["request_ids"]


async def test_arrow_batch(scorer_env: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    x, _ = make_frame(1000, seed=4)
    table = pa.Table.from_pandas(x[list(reversed(FEATURES))], preserve_index=False)  # column order is free
    headers = {"content-type": "application/vnd.apache.arrow.stream"}
    async with scorer(monkeypatch) as (_, c):
        r = await c.post("/arrow/score_batch", content=arrow_body(table), headers=headers)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["scores"], reference_scores(scorer_env, x[FEATURES].to_numpy()), atol=1e-6)
        assert r.headers["x-model-version"] == scorer_env.versions["champion"]
        r = await c.post("/arrow/score_batch", content=arrow_body(table),
                         headers={**headers, "accept": "application/vnd.apache.arrow.stream"})
        out = pa.ipc.open_stream(r.content).read_all()
        assert out.column_names == ["score", "decision"] and out.num_rows == 1000
        ids = table.append_column("request_id", pa.array([f"t{i}" for i in range(1000)]))
        r = await c.post("/arrow/score_batch", content=arrow_body(ids), headers=headers)
        assert r.json()["request_ids"][999] == "t999"
        # bad inputs
        r = await c.post("/arrow/score_batch", content=b"garbage", headers=headers)
        assert r.status_code == 400 and "not a valid Arrow" in r.json()["error"]
        r = await c.post("/arrow/score_batch", content=arrow_body(table), headers={"content-type": "application/json"})
        assert r.status_code == 415
        r = await c.post("/arrow/score_batch", content=arrow_body(table.drop_columns(["f01"])), headers=headers)
        assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["columns", "f01"]
        nan = table.set_column(table.column_names.index("f05"), "f05", pa.array([math.nan] * 1000))
        r = await c.post("/arrow/score_batch", content=arrow_body(nan), headers=headers)
        assert r.status_code == 400 and r.json()["detail"][0]["type"] == "finite_number"


async def test_explain_returns_the_top_contributions(scorer_env: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    features = row(5)
    async with scorer(monkeypatch) as (_, c):
        r = await c.post("/explain", json={"features": features, "top_k": 3})
        full = await c.post("/explain", json={"features": features, "top_k": 100})
        bad = await c.post("/explain", json={"features": features, "top_k": 0})
    assert r.status_code == 200
    top = r.json()["contributions"]
    assert len(top) == 3
    sizes = [abs(t["contribution"]) for t in top]
    assert sizes == sorted(sizes, reverse=True)
    assert all(t["value"] == pytest.approx(features[t["feature"]]) for t in top)
    everything = full.json()["contributions"]
    assert sorted(t["feature"] for t in everything) == sorted(FEATURES)
    assert max(abs(t["contribution"]) for t in everything) == pytest.approx(sizes[0])
    assert bad.status_code == 400 and bad.json()["detail"][0]["loc"] == ["top_k"]


async def test_health_metrics_and_limits(scorer_env: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    async with scorer(monkeypatch, KINGMAKER_MAX_BODY_BYTES="2000") as (_, c):
        assert (await c.get("/livez")).status_code == 200
        assert (await c.get("/readyz")).status_code == 200
        for i in range(3):
            await c.post("/score", json={"features": row(i)})
        await c.post("/score", json={"features": {"zz": 1}})
        big = await c.post("/score_batch", json={"rows": [row(i) for i in range(40)]})
        metrics = (await c.get("/metrics")).text
    assert big.status_code == 413
    version = scorer_env.versions["champion"]
    assert f'kingmaker_predictions_total{{arm="champion",model_version="{version}"}} 3.0' in metrics
    assert f'kingmaker_scorer_requests_total{{arm="champion",code="400",endpoint="score",model_version="{version}"}}' in metrics
    assert 'kingmaker_scorer_errors_total{arm="champion",endpoint="score",model_version="' in metrics
    assert "kingmaker_score_bucket" in metrics and "kingmaker_decisions_total" in metrics
    assert f'kingmaker_scorer_model_info{{arm="champion",model_name="fraud-detector",model_version="{version}"}} 1.0' in metrics


async def test_optional_scoring_token(scorer_env: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    async with scorer(monkeypatch, KINGMAKER_SCORING_TOKEN="client-1") as (_, c):
        assert (await c.post("/score", json={"features": row(1)})).status_code == 401
        ok = await c.post("/score", json={"features": row(1)}, headers={"Authorization": "Bearer client-1"})
        assert ok.status_code == 200
        assert (await c.get("/readyz")).status_code == 200  # probes stay open


async def test_missing_alias_fails_start_up(scorer_env: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    from kingmaker.errors import PermanentError

    with pytest.raises(PermanentError, match="does not exist"):
        async with scorer(monkeypatch, "champion", KINGMAKER_MODEL_URI="models:/fraud-detector@nope"):
            pass


async def test_request_timers_do_not_outlive_requests(scorer_env: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """BentoML's timeout middleware leaves a 60 s timer per request holding the request's objects;
    `fix_bentoml_request_timers` (applied when the services are imported) cancels it at the end."""
    import asyncio

    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    import bentos.scorer  # noqa: F401  (importing a service applies the fix)

    assert getattr(TimeoutMiddleware, "_kingmaker_fixed", False)
    loop = asyncio.get_running_loop()

    def live_timeout_timers() -> int:
        return sum(1 for h in getattr(loop, "_scheduled", []) if not h.cancelled()
                   and getattr(h._callback, "__name__", "") == "_set_timer_out")

    async with scorer(monkeypatch) as (_, c):
        before = live_timeout_timers()
        for i in range(20):
            assert (await c.post("/score", json={"features": row(i)})).status_code == 200
        assert live_timeout_timers() == before


async def test_huge_json_integer_is_a_400_not_a_500(scorer_env: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    features = ", ".join(f'"{k}": {"9" * 400 if k == "f01" else v}' for k, v in row(1).items())
    async with scorer(monkeypatch) as (_, c):
        r = await c.post("/score", content=f'{{"features": {{{features}}}}}', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["features", "f01"]


@pytest.mark.parametrize("request_id", ["tx-€", "tx-\u0001", "a\nb"])
async def test_scorer_refuses_request_ids_that_cannot_be_a_header(
        request_id: str, scorer_env: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    async with scorer(monkeypatch) as (_, c):
        for path in ("/score", "/explain"):
            r = await c.post(path, json={"features": row(1), "request_id": request_id})
            assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["request_id"], r.text
        r = await c.post("/score_batch", json={"rows": [row(1)], "request_ids": [request_id]})
        assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["request_ids", 0]


async def test_arrow_bombs_and_duplicate_columns_are_refused(scorer_env: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    headers = {"content-type": "application/vnd.apache.arrow.stream"}
    bomb = pa.table({name: pa.array(np.zeros(2_000_000)) for name in FEATURES})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, bomb.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as w:
        w.write_table(bomb)
    body = sink.getvalue().to_pybytes()
    assert len(body) < 200_000  # ~100 MB of doubles
    duplicate = pa.Table.from_arrays([pa.array([1.0])] * (len(FEATURES) + 1), names=[*FEATURES, FEATURES[0]])
    async with scorer(monkeypatch) as (_, c):
        r = await c.post("/arrow/score_batch", content=body, headers=headers)
        assert r.status_code == 413 and r.json()["code"] == "too_large" and "10000 rows" in r.json()["error"]
        r = await c.post("/arrow/score_batch", content=arrow_body(duplicate), headers=headers)
        assert r.status_code == 400 and r.json()["detail"][0] == {
            "loc": ["columns", FEATURES[0]], "msg": "duplicate column name (each feature is one column)",
            "type": "duplicate_column"}
