"""Real processes: 10,000 routed requests land on the arms the routing function says, within +-1 pp of
the weight, and each is in the prediction log exactly once; shadow mode and paired split log both arms."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from bentos.bench import pair_counts
from bentos.routing import choose_arm
from kingmaker import logs

from .bentos_support import fire, metric, serving_stack, transactions, wait_until

pytestmark = pytest.mark.integration

WEIGHT = 0.1


def test_split_routing_counts_and_log(serving_home: Path, tmp_path: Path) -> None:
    bodies = transactions(10_000, seed=11)
    for i, b in enumerate(bodies):  # one entity per request: the split is measured over 10,000 keys
        b["ids"] = {"customer_id": f"cust-{i:05d}"}
    with serving_stack(serving_home, tmp_path, {"challenger_weight": WEIGHT, "pairing": "off"}) as stack:
        outcomes = asyncio.run(fire(f"{stack.router.url}/predict", bodies, concurrency=16))
        assert stack.challenger is not None
        versions = {arm: httpx.post(f"{s.url}/info", json={}).json()["model_version"]
                    for arm, s in (("champion", stack.champion), ("challenger", stack.challenger))}
        router_metrics = httpx.get(f"{stack.router.url}/metrics").text
        scorer_metrics = httpx.get(f"{stack.champion.url}/metrics").text
        stack.router.stop()  # SIGTERM: the Router flushes its log on the way out
    assert len(outcomes) == 10_000
    failed = [o for o in outcomes if o.status != 200]
    assert not failed, failed[:3]
    counts = {"champion": 0, "challenger": 0}
    for o in outcomes:
        assert o.answer is not None
        expected = choose_arm(o.body["ids"]["customer_id"], WEIGHT, "it").value
        assert o.answer["arm"] == expected == o.headers["x-kingmaker-arm"]
        assert o.answer["model_version"] == versions[expected] == o.headers["x-model-version"]
        assert o.answer["request_id"] == o.body["request_id"] == o.headers["x-request-id"]
        counts[expected] += 1
    share = counts["challenger"] / len(outcomes)
    assert abs(share - WEIGHT) <= 0.01, f"observed challenger share {share:.4f} for weight {WEIGHT}"

    log = logs.read_predictions(stack.predictions_url)
    assert len(log) == 10_000 and log["request_id"].is_unique  # exactly once: split without pairing
    answered = {o.body["request_id"]: o.answer for o in outcomes if o.answer is not None}
    assert set(log["request_id"]) == set(answered)
    merged = log.set_index("request_id")
    for request_id, answer in list(answered.items())[:500]:
        row = merged.loc[request_id]
        assert row["arm"] == answer["arm"] and row["model_version"] == answer["model_version"]
        assert row["score"] == pytest.approx(answer["score"]) and bool(row["served"])
    assert (merged["arm"] == "challenger").sum() == counts["challenger"]
    assert "kingmaker_router_requests_total" in router_metrics
    assert f'kingmaker_predictions_total{{arm="champion",model_version="{versions["champion"]}"}}' in scorer_metrics


def test_shadow_mode_champion_answers_and_both_arms_are_logged(serving_home: Path, tmp_path: Path) -> None:
    bodies = transactions(600, seed=12)
    # The challenger here is a scikit-learn forest (~6 ms a row): give the shadow calls room, so that
    # every request gets its paired challenger row (an overloaded challenger would be skipped, by design),
    # and let them finish before the stop (on a busy machine 600 of them take a while).
    config = {"mode": "shadow", "challenger_weight": 0.5, "shadow_timeout_ms": 300_000, "shadow_max_in_flight": 10_000}
    with serving_stack(serving_home, tmp_path, config) as stack:
        outcomes = asyncio.run(fire(f"{stack.router.url}/predict", bodies, concurrency=8))
        deadline = time.monotonic() + 300
        while True:
            text = httpx.get(f"{stack.router.url}/metrics").text
            if metric(text, "kingmaker_router_upstream_requests_total", arm="challenger") >= len(bodies):
                break
            assert time.monotonic() < deadline, "the shadow calls did not finish"
            time.sleep(0.5)
        upstream = [ln for ln in text.splitlines() if ln.startswith("kingmaker_router_upstream_requests_total")]
        stack.router.stop()
    assert all(o.status == 200 and o.answer and o.answer["arm"] == "champion" for o in outcomes)
    log = logs.read_predictions(stack.predictions_url)
    ids = {b["request_id"] for b in bodies}
    for arm, served in (("champion", True), ("challenger", False)):
        part = log[log["arm"] == arm]
        assert set(part["request_id"]) == ids and part["request_id"].is_unique, (arm, upstream)
        assert set(part["served"]) == {served}
    assert len(log) == 2 * len(bodies)


def test_paired_split_logs_both_arms_for_every_answered_request(serving_home: Path, tmp_path: Path) -> None:
    """Split 90/10 with pairing (the default): each answer comes from its routed arm, and the log holds both arms'
    scores of every answered request under its id, the answering arm's marked served."""
    bodies = transactions(600, seed=13)
    for i, b in enumerate(bodies):
        b["ids"] = {"customer_id": f"cust-{i:04d}"}
    # room for every call (the challenger is a ~6 ms/row forest): no pairing call is skipped or times out, and no
    # challenger-routed request falls back to the champion on a loaded machine (the client waits 30 s)
    config = {"challenger_weight": WEIGHT, "champion_timeout_ms": 20_000, "challenger_timeout_ms": 20_000,
              "shadow_timeout_ms": 20_000, "shadow_max_in_flight": 10_000}
    with serving_stack(serving_home, tmp_path, config) as stack:
        outcomes = asyncio.run(fire(f"{stack.router.url}/predict", bodies, concurrency=8))
        routing = httpx.post(f"{stack.router.url}/routing", json={}).json()
        answered = {o.body["request_id"]: o.answer["arm"] for o in outcomes if o.status == 200 and o.answer}
        # every row the Router answered (a client may have given up on a few) has one pairing outcome: paired,
        # or counted as failed, skipped, circuit_open, fallback ... once its off-path call has ended
        def served() -> float:
            return metric(httpx.get(f"{stack.router.url}/metrics").text, "kingmaker_router_requests_total", code="200")

        try:
            wait_until(lambda: sum(pair_counts(stack.router.url).values()) == served(), 120, "pairing outcomes")
        finally:
            pairs, answered_rows = pair_counts(stack.router.url), served()
            stack.router.stop()
    errors = [o.error or o.status for o in outcomes if o.status != 200]
    assert routing["config"]["pairing"] == "all"
    assert len(answered) >= 0.95 * len(bodies), errors[:5]
    assert all(arm == choose_arm(o.body["ids"]["customer_id"], WEIGHT, "it").value
               for o in outcomes if (arm := answered.get(o.body["request_id"])))
    assert 0 < sum(a == "challenger" for a in answered.values()) < len(bodies) / 4  # exposure stays at the weight
    log = logs.read_predictions(stack.predictions_url)
    assert set(log["mode"]) == {"split"} and set(log["request_id"]) <= {b["request_id"] for b in bodies}
    answered_by_router = set(log[log["served"]]["request_id"])  # answered => logged
    assert len(answered_by_router) == answered_rows and set(answered) <= answered_by_router
    # a pair can only be missing when the Router counted why (a failed or skipped off-path call), and rarely
    per_request = log["request_id"].value_counts()
    unpaired = {rid for rid in answered_by_router if per_request[rid] != 2}
    assert len(unpaired) == answered_rows - pairs["paired"] <= 0.01 * answered_rows, (pairs, errors[:5])
    for arm in ("champion", "challenger"):
        part = log[log["arm"] == arm].set_index("request_id")
        assert set(answered) - unpaired <= set(part.index) and part.index.is_unique, arm
        assert all(bool(part.loc[rid, "served"]) == (answered[rid] == arm) for rid in set(answered) - unpaired), arm
    scores = log.pivot(index="request_id", columns="arm", values="score")
    assert (scores["champion"] != scores["challenger"]).mean() > 0.9  # two different models scored each row
