"""The Router in-process: routing, fallbacks, shadow mode, the prediction log, feedback, hot reload.

Arms are real in-process Scorers (tiny registered models) or stub Starlette apps for fault injection;
a URL that is not in the app map goes over real TCP (used for "connection refused")."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from bentos.routing import choose_arm
from kingmaker import logs

from .conftest import FEATURES, Registry, both_arms, free_port, metric, router, row, stub_arm, wait_ready

pytestmark = pytest.mark.anyio


def predictions(url: str) -> pd.DataFrame:
    return logs.read_predictions(url)


async def test_split_follows_the_routing_function_and_logs_each_request_once(
        scorer_env: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    async with both_arms(monkeypatch) as apps, router(monkeypatch, tmp_path, apps,
                                                       {"challenger_weight": 0.3, "challenger_timeout_ms": 5000}) as h:
        answers = {}
        for i in range(60):
            customer = f"c{i % 40}"  # some customers come back: they must land on the same arm
            r = await h.client.post("/predict", json={"features": row(i), "request_id": f"tx-{i}",
                                                      "ids": {"customer_id": customer}})
            assert r.status_code == 200, r.text
            answers[f"tx-{i}"] = (customer, r)
    by_customer: dict[str, set[str]] = {}
    for request_id, (customer, r) in answers.items():
        body = r.json()
        expected = choose_arm(customer, 0.3, "test").value
        assert body["arm"] == expected == r.headers["x-kingmaker-arm"]
        assert body["model_version"] == scorer_env.versions[expected] == r.headers["x-model-version"]
        assert body["request_id"] == request_id == r.headers["x-request-id"]
        assert body["mode"] == "split" and body["fallback"] is False
        by_customer.setdefault(customer, set()).add(body["arm"])
    assert all(len(arms) == 1 for arms in by_customer.values())
    assert {b.json()["arm"] for _, b in answers.values()} == {"champion", "challenger"}
    log = predictions(h.predictions_url)
    assert sorted(log["request_id"]) == sorted(answers)  # exactly once each (split without pairing: one arm)
    log = log.set_index("request_id")
    for request_id, (customer, r) in answers.items():
        entry = log.loc[request_id]
        assert entry["arm"] == r.json()["arm"] and bool(entry["served"]) and entry["mode"] == "split"
        assert entry["routing_key"] == customer and entry["model_version"] == r.json()["model_version"]
        assert entry["score"] == pytest.approx(r.json()["score"])
        assert entry["feat_f01"] == pytest.approx(row(int(request_id[3:]))["f01"])


async def test_request_id_is_the_routing_key_without_entity_ids(
        scorer_env: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    async with both_arms(monkeypatch) as apps, router(monkeypatch, tmp_path, apps, {"challenger_weight": 0.5}) as h:
        for i in range(20):
            r = await h.client.post("/predict", json={"features": row(i), "request_id": f"q{i}"})
            assert r.json()["arm"] == choose_arm(f"q{i}", 0.5, "test").value


@pytest.mark.parametrize("fault", ["http_500", "timeout", "refused", "rejected"])
async def test_challenger_faults_fall_back_to_the_champion(
        scorer_env: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fault: str) -> None:
    challenger = {"http_500": stub_arm("challenger", "9", status=500),
                  "timeout": stub_arm("challenger", "9", delay_s=0.5),
                  "rejected": stub_arm("challenger", "9", status=400),
                  "refused": None}[fault]
    challenger_url = f"http://127.0.0.1:{free_port()}" if fault == "refused" else "http://challenger"
    async with both_arms(monkeypatch) as apps:
        apps = {"http://champion": apps["http://champion"], **({"http://challenger": challenger} if challenger else {})}
        config = {"challenger_weight": 1.0, "challenger_timeout_ms": 100}
        async with router(monkeypatch, tmp_path, apps, config, challenger_url=challenger_url) as h:
            for i in range(8):
                r = await h.client.post("/predict", json={"features": row(i), "request_id": f"f{i}"})
                assert r.status_code == 200, r.text
                assert r.json()["arm"] == "champion" and r.json()["fallback"] is True
                assert r.headers["x-kingmaker-fallback"] == "true"
            metrics = (await h.client.get("/metrics")).text
    assert metric(metrics, "kingmaker_router_fallbacks_total") == 8.0
    log = predictions(h.predictions_url)
    assert len(log) == 8 and set(log["arm"]) == {"champion"}  # only the arm that scored is logged
    if challenger is not None and fault != "rejected":
        assert challenger.state.calls <= 6  # the circuit opened after 5 failures


async def test_champion_down_is_a_503_with_retry_after(
        scorer_env: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    apps = {"http://champion": stub_arm("champion", "1", status=503), "http://challenger": stub_arm("challenger", "2")}
    async with router(monkeypatch, tmp_path, apps, {"challenger_weight": 0.0}) as h:
        r = await h.client.post("/predict", json={"features": row(1), "request_id": "down-1"})
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1" and r.headers["x-request-id"] == "down-1"
        # a stable code and message; the upstream host, port and exception go to the log only
        assert r.json() == {"code": "champion_unavailable", "error": "the champion cannot answer right now; retry "
                            "later", "request_id": "down-1"}
        batch = await h.client.post("/predict_batch", json={"rows": [{"features": row(1)}]})
        assert batch.status_code == 503 and batch.json()["code"] == "champion_unavailable"


async def test_champion_fallback_to_the_challenger_is_opt_in_counted_and_visible(
        scorer_env: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Split mode, champion down: with ``champion_fallback: challenger`` the challenger answers the champion's
    share instead of a 503 (off by default: the test above), each row counted and logged as the challenger's."""
    apps = {"http://champion": stub_arm("champion", "1", status=503), "http://challenger": stub_arm("challenger", "2")}
    config = {"challenger_weight": 0.0, "champion_fallback": "challenger"}
    async with router(monkeypatch, tmp_path, apps, config) as h:
        for i in range(8):
            r = await h.client.post("/predict", json={"features": row(i), "request_id": f"cf-{i}"})
            assert r.status_code == 200, r.text
            assert r.json()["arm"] == "challenger" and r.json()["fallback"] is True
            assert r.headers["x-kingmaker-fallback"] == "true" and r.headers["x-model-version"] == "2"
        batch = await h.client.post("/predict_batch", json={"rows": [{"features": row(i)} for i in range(3)]})
        assert {p["arm"] for p in batch.json()["predictions"]} == {"challenger"}
        routing = (await h.client.post("/routing", json={})).json()
        metrics = (await h.client.get("/metrics")).text
    assert routing["config"]["champion_fallback"] == "challenger" and routing["champion_fallbacks"] == 11
    assert metric(metrics, "kingmaker_router_champion_fallback_enabled") == 1.0
    assert metric(metrics, "kingmaker_router_champion_fallbacks_total") == 11.0
    log = predictions(h.predictions_url)
    assert len(log) == 11 and set(log["arm"]) == {"challenger"} and log["served"].all()


async def test_a_champion_refusal_is_passed_to_the_client(
        scorer_env: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The champion's own 4xx (it considers the input invalid) reaches the client as it is, for both endpoints."""
    apps = {"http://champion": stub_arm("champion", "1", status=422), "http://challenger": stub_arm("challenger", "2")}
    async with router(monkeypatch, tmp_path, apps, {"challenger_weight": 0.0}) as h:
        r = await h.client.post("/predict", json={"features": row(1), "request_id": "no-1"})
        assert r.status_code == 422 and r.json() == {"error": "injected"} and r.headers["x-request-id"] == "no-1"
        batch = await h.client.post("/predict_batch", json={"rows": [{"features": row(1)}, {"features": row(2)}]})
        assert batch.status_code == 422 and batch.json() == {"error": "injected"}
        metrics = (await h.client.get("/metrics")).text
    assert metric(metrics, "kingmaker_router_upstream_requests_total", arm="champion", model_version="1",
                  outcome="rejected") == 2.0
    assert predictions(h.predictions_url).empty


async def test_not_ready_until_the_champion_answers(
        scorer_env: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with router(monkeypatch, tmp_path, {}, champion_url=dead, challenger_url="", ready=False) as h:
        assert (await h.client.get("/readyz")).status_code == 503
        assert (await h.client.get("/livez")).status_code == 200
        r = await h.client.post("/predict", json={"features": row(1)})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"


async def test_shadow_mode_answers_with_the_champion_and_logs_both(
        scorer_env: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    async with both_arms(monkeypatch) as apps, router(monkeypatch, tmp_path, apps,
                                                       {"mode": "shadow", "challenger_weight": 0.9}) as h:
        for i in range(30):
            r = await h.client.post("/predict", json={"features": row(i), "request_id": f"s{i}",
                                                      "ids": {"customer_id": f"c{i}"}})
            assert r.json()["arm"] == "champion" and r.json()["mode"] == "shadow"
        batch = await h.client.post("/predict_batch", json={"rows": [{"features": row(i), "request_id": f"b{i}"}
                                                                     for i in range(10)]})
        assert {p["arm"] for p in batch.json()["predictions"]} == {"champion"}
    log = predictions(h.predictions_url)
    ids = [f"s{i}" for i in range(30)] + [f"b{i}" for i in range(10)]
    for arm, served in (("champion", True), ("challenger", False)):
        part = log[log["arm"] == arm]
        assert sorted(part["request_id"]) == sorted(ids), arm
        assert set(part["served"]) == {served} and set(part["mode"]) == {"shadow"}
    assert set(log[log["arm"] == "challenger"]["model_version"]) == {scorer_env.versions["challenger"]}


async def test_shadow_failures_never_touch_the_response(
        scorer_env: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    async with both_arms(monkeypatch) as real:
        apps = {"http://champion": real["http://champion"], "http://challenger": stub_arm("challenger", "9", status=500)}
        async with router(monkeypatch, tmp_path, apps, {"mode": "shadow"}) as h:
            for i in range(10):
                r = await h.client.post("/predict", json={"features": row(i), "request_id": f"x{i}"})
                assert r.status_code == 200 and r.json()["arm"] == "champion"
                assert "x-kingmaker-fallback" not in r.headers
    log = predictions(h.predictions_url)
    assert set(log["arm"]) == {"champion"} and len(log) == 10


async def test_split_with_pairing_logs_both_arms_for_every_answered_request(
        scorer_env: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Pairing: the answer is the routed arm's; the other arm's score is logged under the same id."""
    config = {"challenger_weight": 0.3, "pairing": "all", "challenger_timeout_ms": 5000}  # no fallback under load
    async with both_arms(monkeypatch) as apps, router(monkeypatch, tmp_path, apps, config) as h:
        served = {}
        for i in range(30):
            r = await h.client.post("/predict", json={"features": row(i), "request_id": f"p{i}",
                                                      "ids": {"customer_id": f"c{i}"}})
            assert r.status_code == 200 and r.json()["arm"] == choose_arm(f"c{i}", 0.3, "test").value
            served[f"p{i}"] = r.json()["arm"]
        batch = await h.client.post("/predict_batch", json={"rows": [
            {"features": row(i), "request_id": f"pb{i}", "ids": {"customer_id": f"d{i}"}} for i in range(12)]})
        served.update({p["request_id"]: p["arm"] for p in batch.json()["predictions"]})
        await asyncio.sleep(0.2)  # the last pairing calls finish off the response path
        routing = (await h.client.post("/routing", json={})).json()
        metrics = (await h.client.get("/metrics")).text
    assert routing["config"]["pairing"] == "all"
    assert set(served.values()) == {"champion", "challenger"}
    log = predictions(h.predictions_url)
    assert len(log) == 2 * len(served) and set(log["mode"]) == {"split"}
    for request_id, arm in served.items():
        rows = log[log["request_id"] == request_id]
        assert sorted(rows["arm"]) == ["challenger", "champion"], request_id
        assert {(r.arm, bool(r.served)) for r in rows.itertuples()} == {(a, a == arm) for a in ("champion", "challenger")}
        assert set(rows["model_version"]) == set(scorer_env.versions.values())
    n_challenger = sum(a == "challenger" for a in served.values())
    # rows are counted by the arm that scored them off the path
    assert metric(metrics, "kingmaker_router_pairs_total", arm="champion", outcome="paired") == n_challenger
    assert metric(metrics, "kingmaker_router_pairs_total", arm="challenger", outcome="paired") == len(served) - n_challenger


async def test_pairing_samples_by_request_id_and_stops_at_weight_zero(
        scorer_env: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from bentos.routing import pair_sampled

    apps = {"http://champion": stub_arm("champion", "1"), "http://challenger": stub_arm("challenger", "2")}
    async with router(monkeypatch, tmp_path, apps, {"challenger_weight": 0.5, "pairing": 0.3}) as h:
        for i in range(60):
            assert (await h.client.post("/predict", json={"features": row(i), "request_id": f"r{i}"})).status_code == 200
    log = predictions(h.predictions_url)
    paired = set(log[~log["served"]]["request_id"])
    assert paired == {f"r{i}" for i in range(60) if pair_sampled(f"r{i}", 0.3, "test")}
    assert 5 < len(paired) < 35  # a sample, neither none nor all
    apps = {"http://champion": stub_arm("champion", "1"), "http://challenger": stub_arm("challenger", "2")}
    (tmp_path / "zero").mkdir()
    async with router(monkeypatch, tmp_path / "zero", apps, {"challenger_weight": 0.0, "pairing": "all"}) as h:
        for i in range(5):
            await h.client.post("/predict", json={"features": row(i), "request_id": f"z{i}"})
    assert apps["http://challenger"].state.calls == 0  # weight 0 (e.g. after a rollback): no experiment, no pairs


async def test_pairing_failures_never_touch_the_answer_nor_open_the_served_arms_circuit(
        scorer_env: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """All traffic on the challenger; the champion fails every paired call. Clients see the challenger's answers,
    and the champion's circuit stays closed: it would answer the champion-routed rows (and the fallbacks)."""
    apps = {"http://champion": stub_arm("champion", "1", status=500), "http://challenger": stub_arm("challenger", "2")}
    async with router(monkeypatch, tmp_path, apps, {"challenger_weight": 1.0, "pairing": "all"}) as h:
        for i in range(12):
            r = await h.client.post("/predict", json={"features": row(i), "request_id": f"e{i}"})
            assert r.status_code == 200 and r.json()["arm"] == "challenger" and r.json()["fallback"] is False
        await asyncio.sleep(0.2)  # let the off-path calls finish
        routing = (await h.client.post("/routing", json={})).json()
        metrics = (await h.client.get("/metrics")).text
    assert routing["arms"]["champion"]["circuit_open"] is False
    assert apps["http://champion"].state.calls == 12  # every pair was tried: no circuit skipped one
    assert metric(metrics, "kingmaker_router_pairs_total", arm="champion", outcome="failed") == 12.0
    log = predictions(h.predictions_url)
    assert len(log) == 12 and set(log["arm"]) == {"challenger"} and log["served"].all()


async def test_a_malformed_answer_is_the_arms_failure_and_a_fallback_row_is_counted_unpaired(
        scorer_env: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """All traffic on a challenger that answers 200 with a body that is no Scorer's answer: the champion answers
    every row (a fallback, not a 500), the challenger's call counts as bad_response, and each row counts as
    unpaired because of the fallback, so the pair outcomes add up to the answered rows."""
    apps = {"http://champion": stub_arm("champion", "1"),
            "http://challenger": stub_arm("challenger", "2", answer={"score": 0.5, "model_version": "2"})}
    async with router(monkeypatch, tmp_path, apps, {"challenger_weight": 1.0, "pairing": "all"}) as h:
        for i in range(3):
            r = await h.client.post("/predict", json={"features": row(i), "request_id": f"m{i}"})
            assert r.status_code == 200 and (r.json()["arm"], r.json()["fallback"]) == ("champion", True)
        r = await h.client.post("/predict_batch", json={"rows": [{"features": row(i)} for i in range(4)]})
        assert r.status_code == 200 and {(p["arm"], p["fallback"]) for p in r.json()["predictions"]} == {
            ("champion", True)}
        metrics = (await h.client.get("/metrics")).text
    assert metric(metrics, "kingmaker_router_pairs_total", arm="challenger", outcome="fallback") == 7.0
    assert metric(metrics, "kingmaker_router_pairs_total", arm="challenger", outcome="paired") == 0.0
    # three singles, one batch
    assert metric(metrics, "kingmaker_router_upstream_requests_total", arm="challenger", outcome="bad_response") == 4.0
    log = predictions(h.predictions_url)
    assert len(log) == 7 and set(log["arm"]) == {"champion"} and log["served"].all()


async def test_a_batch_answer_short_of_rows_is_a_bad_response(
        scorer_env: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Fewer scores than rows: a 503 for the champion's fault (logged why), not a 500 from a mismatched zip."""
    short = {"model_name": "fraud-detector", "model_version": "1", "threshold": 0.5, "scores": [0.1],
             "decisions": [False]}
    apps = {"http://champion": stub_arm("champion", "1", answer=short)}
    async with router(monkeypatch, tmp_path, apps, {"challenger_weight": 0.0}) as h:
        r = await h.client.post("/predict_batch", json={"rows": [{"features": row(i)} for i in range(3)]})
    assert r.status_code == 503, r.text
    assert "bad_response: unreadable answer (ValueError: 1 scores for 3 rows)" in caplog.text


async def test_pairing_is_skipped_beyond_the_in_flight_limit(
        scorer_env: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # the champion takes 3 s: the first two pairing calls are still in flight while the other four requests arrive
    apps = {"http://champion": stub_arm("champion", "1", delay_s=3.0), "http://challenger": stub_arm("challenger", "2")}
    config = {"challenger_weight": 1.0, "pairing": "all", "shadow_max_in_flight": 2, "shadow_timeout_ms": 20_000}
    async with router(monkeypatch, tmp_path, apps, config) as h:
        for i in range(6):
            assert (await h.client.post("/predict", json={"features": row(i), "request_id": f"k{i}"})).status_code == 200
        metrics = (await h.client.get("/metrics")).text
    assert metric(metrics, "kingmaker_router_pairs_total", arm="champion", outcome="skipped") == 4.0
    log = predictions(h.predictions_url)
    assert (~log["served"]).sum() == 2 and log["served"].sum() == 6


async def test_invalid_input_is_refused_before_any_arm_is_called(
        scorer_env: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    champion, challenger = stub_arm("champion", "1"), stub_arm("challenger", "2")
    apps = {"http://champion": champion, "http://challenger": challenger}
    async with router(monkeypatch, tmp_path, apps) as h:
        r = await h.client.post("/predict", json={"features": {**row(1), "bogus": 1.0}, "request_id": "bad-1"})
        assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["features", "bogus"]
        assert r.headers["x-request-id"] == "bad-1"
        r = await h.client.post("/predict", json={"features": row(1), "ids": {"customer_id": 7}})
        assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["ids", "customer_id"]
        r = await h.client.post("/predict", json={"features": row(1), "typo": True})
        assert r.status_code == 400
    assert champion.state.calls == 0 and challenger.state.calls == 0


async def test_batch_routes_each_row(scorer_env: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    async with both_arms(monkeypatch) as apps, router(monkeypatch, tmp_path, apps, {
            "challenger_weight": 0.5, "challenger_timeout_ms": 5000}, KINGMAKER_MAX_BATCH_ROWS="50") as h:
        rows = [{"features": row(i), "request_id": f"r{i}", "ids": {"customer_id": f"c{i}"}} for i in range(40)]
        r = await h.client.post("/predict_batch", json={"rows": rows})
        assert r.status_code == 200, r.text
        out = r.json()["predictions"]
        assert [p["request_id"] for p in out] == [f"r{i}" for i in range(40)]
        for i, p in enumerate(out):
            assert p["arm"] == choose_arm(f"c{i}", 0.5, "test").value
            assert p["model_version"] == scorer_env.versions[p["arm"]]
        single = await h.client.post("/predict", json={"features": row(3), "ids": {"customer_id": "c3"}})
        assert single.json()["score"] == pytest.approx(out[3]["score"])  # same arm, same model, same score
        too_big = await h.client.post("/predict_batch", json={"rows": rows + rows[:11]})
        assert too_big.status_code == 413
        dup = await h.client.post("/predict_batch", json={"rows": [rows[0], rows[0]]})
        assert dup.status_code == 400 and dup.json()["detail"][0]["loc"] == ["rows", 1, "request_id"]
        bad = await h.client.post("/predict_batch", json={"rows": [rows[0], {"features": {**row(1), "f01": "x"}}]})
        assert bad.status_code == 400 and bad.json()["detail"][0]["loc"] == ["rows", 1, "features", "f01"]
    log = predictions(h.predictions_url)
    assert len(log) == 41 and log["request_id"].is_unique


async def test_batch_challenger_failure_falls_back_for_its_rows(
        scorer_env: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    async with both_arms(monkeypatch) as real:
        apps = {"http://champion": real["http://champion"], "http://challenger": stub_arm("challenger", "9", status=500)}
        async with router(monkeypatch, tmp_path, apps, {"challenger_weight": 0.5}) as h:
            rows = [{"features": row(i), "request_id": f"r{i}", "ids": {"customer_id": f"c{i}"}} for i in range(20)]
            out = (await h.client.post("/predict_batch", json={"rows": rows})).json()["predictions"]
    assert {p["arm"] for p in out} == {"champion"}
    assert [p["fallback"] for p in out] == [choose_arm(f"c{i}", 0.5, "test").value == "challenger" for i in range(20)]


async def test_feedback(scorer_env: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    auth = {"Authorization": "Bearer fb-token"}
    async with both_arms(monkeypatch) as apps, router(monkeypatch, tmp_path, apps) as h:
        for i in range(3):
            await h.client.post("/predict", json={"features": row(i), "request_id": f"tx-{i}"})
        c = h.client
        assert (await c.post("/feedback", json={"request_id": "tx-0", "label": 1})).status_code == 401
        assert (await c.post("/feedback", json={"request_id": "tx-0", "label": 1},
                             headers={"Authorization": "Bearer wrong"})).status_code == 401
        first = await c.post("/feedback", json={"request_id": "tx-0", "label": 1}, headers=auth)
        assert first.status_code == 200
        assert first.json() == {"received": 1, "written": 1, "duplicates": 0, "updated": 0, "superseded": 0,
                                "superseded_ids": [], "unknown": 0, "unknown_ids": []}
        again = await c.post("/feedback", json={"request_id": "tx-0", "label": 1}, headers=auth)
        assert again.json()["written"] == 0 and again.json()["duplicates"] == 1  # idempotent
        batch = await c.post("/feedback", headers=auth, json={"labels": [
            {"request_id": "tx-0", "label": 0}, {"request_id": "tx-1", "label": 0},
            {"request_id": "nobody", "label": 1}]})
        assert batch.json() == {"received": 3, "written": 3, "duplicates": 0, "updated": 1, "superseded": 0,
                                "superseded_ids": [], "unknown": 1, "unknown_ids": ["nobody"]}
        # a relabel inside one request: the last label is kept, the earlier one is reported as superseded
        relabel = await c.post("/feedback", headers=auth, json={"labels": [
            {"request_id": "tx-2", "label": 0}, {"request_id": "tx-2", "label": 1}, {"request_id": "tx-2", "label": 1}]})
        assert relabel.json() == {"received": 3, "written": 1, "duplicates": 1, "updated": 0, "superseded": 1,
                                  "superseded_ids": ["tx-2"], "unknown": 0, "unknown_ids": []}
        bad: dict[str, Any]
        for bad in ({"request_id": "tx-2", "label": 2}, {"request_id": "tx-2", "label": True}, {"request_id": "tx-2"},
                    {"labels": []}, {"request_id": "tx-2", "label": 1, "labels": [{"request_id": "a", "label": 1}]}):
            r = await c.post("/feedback", json=bad, headers=auth)
            assert r.status_code == 400, (bad, r.text)
        metrics = (await c.get("/metrics")).text
    labels = logs.read_labels(h.labels_url).set_index("request_id")["label"].to_dict()
    assert labels == {"tx-0": 0, "tx-1": 0, "nobody": 1, "tx-2": 1}
    raw = logs.read(h.labels_url, ts_column="label_ts")
    assert len(raw) == 5  # the duplicate was not written again
    assert metric(metrics, "kingmaker_feedback_labels_total", outcome="superseded") == 1.0
    assert metric(metrics, "kingmaker_feedback_unknown_ids_total") == 1.0
    assert metric(metrics, "kingmaker_auth_failures_total", path="/feedback", reason="missing") == 1.0


async def test_feedback_is_closed_without_tokens(scorer_env: Registry, monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    apps = {"http://champion": stub_arm("champion", "1")}
    async with router(monkeypatch, tmp_path, apps, challenger_url="", KINGMAKER_FEEDBACK_TOKEN="") as h:
        r = await h.client.post("/feedback", json={"request_id": "a", "label": 1},
                                headers={"Authorization": "Bearer anything"})
        assert r.status_code == 503


async def test_weights_reload_without_restart(scorer_env: Registry, monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    apps = {"http://champion": stub_arm("champion", "1"), "http://challenger": stub_arm("challenger", "2")}
    async with router(monkeypatch, tmp_path, apps, {"challenger_weight": 0.0}) as h:
        first = await h.client.post("/predict", json={"features": row(1)})
        assert first.json()["arm"] == "champion"
        h.config_path.write_text(yaml.safe_dump({"salt": "test", "challenger_weight": 1.0, "mode": "split"}))
        await asyncio.sleep(1.1)  # the watcher looks at most once a second
        after = await h.client.post("/predict", json={"features": row(1)})
        assert after.json()["arm"] == "challenger"
        h.config_path.write_text("challenger_weight: [broken\n")
        await asyncio.sleep(1.1)
        still = await h.client.post("/predict", json={"features": row(1)})
        assert still.json()["arm"] == "challenger"  # the last good configuration stays
        routing = (await h.client.post("/routing", json={})).json()
        assert routing["config"]["challenger_weight"] == 1.0 and "not valid YAML" in routing["config_error"]
        assert routing["arms"]["challenger"]["model"]["model_version"] == "2"
        metrics = (await h.client.get("/metrics")).text
    assert metric(metrics, "kingmaker_router_config_reloads_total", outcome="invalid") == 1.0


async def test_router_metrics_count_per_arm(scorer_env: Registry, monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    apps = {"http://champion": stub_arm("champion", "1"), "http://challenger": stub_arm("challenger", "2")}
    async with router(monkeypatch, tmp_path, apps, {"challenger_weight": 0.5}) as h:
        arms = [(await h.client.post("/predict", json={"features": row(i), "request_id": f"m{i}"})).json()["arm"]
                for i in range(40)]
        metrics = (await h.client.get("/metrics")).text
    n = arms.count("challenger")
    assert metric(metrics, "kingmaker_router_requests_total", arm="challenger", code="200", mode="split",
                  model_version="2") == n
    assert metric(metrics, "kingmaker_router_routed_total", arm="champion", mode="split") == 40 - n
    assert metric(metrics, "kingmaker_router_request_duration_seconds_count") == 40
    # calls to an arm carry the version it serves: the controller's guardrails read the version under test
    assert metric(metrics, "kingmaker_router_upstream_requests_total", arm="challenger", model_version="2",
                  outcome="ok") == n
    assert metric(metrics, "kingmaker_router_upstream_duration_seconds_count", arm="champion", model_version="1") == 40 - n


async def test_readiness_turns_false_on_sigterm_before_the_server_stops(
        scorer_env: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`Drain` chains onto the server's SIGTERM handler: not ready at once, the server's handler later."""
    import signal

    from bentos.lifecycle import Drain

    called: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: called.append(signum))
    try:
        drain = Drain(delay_s=0.2)
        assert drain.install()
        signal.raise_signal(signal.SIGTERM)
        assert drain.draining and called == []
        await asyncio.sleep(0.4)
        assert called == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    apps = {"http://champion": stub_arm("champion", "1")}
    async with router(monkeypatch, tmp_path, apps, challenger_url="") as h:
        await wait_ready(h.client)


async def test_arms_follow_urls_in_the_config_file(scorer_env: Registry, monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    """`kingmaker serve` re-points an arm by starting a new Scorer and writing its URL into router.yaml."""
    old, new = stub_arm("challenger", "2"), stub_arm("challenger", "3")
    apps = {"http://champion": stub_arm("champion", "1"), "http://challenger": old, "http://challenger-v3": new}
    async with router(monkeypatch, tmp_path, apps, {"challenger_weight": 1.0}) as h:
        assert (await h.client.post("/predict", json={"features": row(1)})).json()["model_version"] == "2"
        h.config_path.write_text(yaml.safe_dump({"mode": "split", "salt": "test", "challenger_weight": 1.0,
                                                 "challenger_url": "http://challenger-v3"}))
        await asyncio.sleep(1.1)
        moved = await h.client.post("/predict", json={"features": row(1)})
        assert moved.json()["arm"] == "challenger" and moved.json()["model_version"] == "3"
        for _ in range(50):  # the new arm's signature is fetched in the background
            routing = (await h.client.post("/routing", json={})).json()
            if routing["arms"]["challenger"]["model"]:
                break
            await asyncio.sleep(0.02)
        assert routing["arms"]["challenger"]["model"] == {"model_name": "fraud-detector", "model_version": "3",
                                                          "alias": "challenger", "features": FEATURES,
                                                          "feature_types": ["double"] * len(FEATURES)}
        assert "url" not in routing["arms"]["challenger"] and "http://" not in str(routing)  # no internals
        h.config_path.write_text(yaml.safe_dump({"mode": "split", "salt": "test", "challenger_weight": 1.0,
                                                 "challenger_url": ""}))
        await asyncio.sleep(1.1)
        alone = await h.client.post("/predict", json={"features": row(1)})
        assert alone.json()["arm"] == "champion" and alone.json()["fallback"] is False
        assert "challenger" not in (await h.client.post("/routing", json={})).json()["arms"]
    assert new.state.calls == 1 and old.state.calls == 1


async def test_an_arm_moved_while_prometheus_scrapes_is_discovered(scorer_env: Registry,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    """A scrape of /metrics that is the first to see the new URL re-points the arm in the event loop. It ran
    in a worker thread (BentoML calls a sync ``__metrics__`` there): the new client was installed, but its
    discovery could not be scheduled, so the arm never reported its version and `kingmaker serve` gave up."""
    apps = {"http://champion": stub_arm("champion", "1"), "http://challenger": stub_arm("challenger", "2"),
            "http://challenger-v3": stub_arm("challenger", "3")}
    async with router(monkeypatch, tmp_path, apps, {"challenger_weight": 1.0}) as h:
        await wait_ready(h.client)
        h.config_path.write_text(yaml.safe_dump({"mode": "split", "salt": "test", "challenger_weight": 1.0,
                                                 "challenger_url": "http://challenger-v3"}))
        await asyncio.sleep(1.1)
        assert (await h.client.get("/metrics")).status_code == 200
        for _ in range(50):
            routing = (await h.client.post("/routing", json={})).json()
            if routing["arms"]["challenger"]["model"]:
                break
            await asyncio.sleep(0.02)
        assert routing["arms"]["challenger"]["model"]["model_version"] == "3"


@pytest.mark.parametrize("request_id", ["tx-€", "tx-😀", "tx-\u0001", "tx\r\nX-Injected: 1", "has space", "x" * 129])
async def test_a_request_id_that_cannot_be_a_header_is_a_400_and_no_arm_failure(
        request_id: str, scorer_env: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Such ids were copied into X-Request-ID: a 500 (or no answer at all), counted as the champion failing,
    so five requests opened its circuit and every client got 503s."""
    champion = stub_arm("champion", "1")
    async with router(monkeypatch, tmp_path, {"http://champion": champion}, challenger_url="") as h:
        for _ in range(6):
            r = await h.client.post("/predict", json={"features": row(1), "request_id": request_id})
            assert r.status_code == 400 and r.json()["code"] == "invalid_request", r.text
            assert r.json()["detail"][0]["loc"] == ["request_id"]
            assert "visible ASCII" in r.json()["error"] or "at most 128" in r.json()["error"]
        ok = await h.client.post("/predict", json={"features": row(1), "request_id": "tx-1"})
        assert ok.status_code == 200 and ok.headers["x-request-id"] == "tx-1"
        routing = (await h.client.post("/routing", json={})).json()
    assert routing["arms"]["champion"]["circuit_open"] is False
    assert champion.state.calls == 1  # the bad ids never reached the arm


async def test_unknown_paths_and_other_media_types_are_answered_as_json_with_bounded_labels(
        scorer_env: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    apps = {"http://champion": stub_arm("champion", "1")}
    async with router(monkeypatch, tmp_path, apps, challenger_url="") as h:
        for i in range(20):
            r = await h.client.get(f"/random-{i}")
            assert r.status_code == 404 and r.json()["code"] == "not_found"
        r = await h.client.post("/routing", content=b"{}", headers={"Content-Type": "multipart/form-data"})
        assert r.status_code == 415 and r.json()["code"] == "unsupported_media_type"
        r = await h.client.post("/predict", content=b"secret=hunter2&x=1",
                                headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 415 and "hunter2" not in r.text  # the body is never echoed
        r = await h.client.get("/predict")
        assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"
        metrics = (await h.client.get("/metrics")).text
    assert "random-" not in metrics


async def test_malformed_bodies_get_our_error_shape_without_internals(
        scorer_env: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    apps = {"http://champion": stub_arm("champion", "1")}
    async with router(monkeypatch, tmp_path, apps, challenger_url="") as h:
        with caplog.at_level(logging.INFO):
            for body in (b"{", b"[]", b'{"features": 1}', b'{"' + b"k" * 5000 + b'": 1, "features": {}}'):
                r = await h.client.post("/predict", content=body, headers={"Content-Type": "application/json"})
                assert r.status_code == 400 and r.json()["code"] == "invalid_request", r.text
                assert "IODescriptor" not in r.text and "pydantic.dev" not in r.text and len(r.text) < 1000
    assert not [rec for rec in caplog.records if rec.exc_info or rec.levelno >= logging.ERROR]
