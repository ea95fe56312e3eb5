"""Real processes under load: the challenger killed mid-run (no client sees a failure), the Router
stopped with SIGTERM (no answered request is missing from the log), the champion down (503)."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from bentos.routing import choose_arm
from kingmaker import logs

from .bentos_support import fire, serving_stack, transactions

pytestmark = pytest.mark.integration


def test_killing_the_challenger_mid_run_fails_no_request(serving_home: Path, tmp_path: Path) -> None:
    bodies = transactions(3_000, seed=21)
    with serving_stack(serving_home, tmp_path, {"challenger_weight": 0.5}) as stack:
        challenger = stack.challenger
        assert challenger is not None
        killed_at: list[int] = []

        def progress(done: int) -> None:
            if done >= 1_000 and not killed_at:
                killed_at.append(done)
                challenger.kill()  # SIGKILL the whole process group: a crash, mid-flight

        outcomes = asyncio.run(fire(f"{stack.router.url}/predict", bodies, concurrency=8, on_progress=progress))
        metrics = httpx.get(f"{stack.router.url}/metrics").text
    assert killed_at, "the challenger was never killed"
    assert len(outcomes) == 3_000
    failed = [o for o in outcomes if o.status != 200]
    assert not failed, failed[:3]
    after = outcomes[killed_at[0] + 50:]  # requests sent well after the kill
    chosen_challenger = [o for o in after if choose_arm(o.body["ids"]["customer_id"], 0.5, "it").value == "challenger"]
    assert chosen_challenger, "no challenger-routed request after the kill"
    assert all(o.answer and o.answer["arm"] == "champion" and o.answer["fallback"] for o in chosen_challenger)
    assert "kingmaker_router_fallbacks_total" in metrics


def test_sigterm_under_load_loses_no_logged_row(serving_home: Path, tmp_path: Path) -> None:
    bodies = transactions(50_000, seed=22)  # more than can be sent before the stop
    # No size/age flush during the run: every answered row is still in memory when SIGTERM arrives,
    # so the test shows that the shutdown flush alone keeps them (and fails if it did not).
    never = {"KINGMAKER_LOG_FLUSH_SECONDS": "3600", "KINGMAKER_LOG_FLUSH_ROWS": "1000000"}
    with serving_stack(serving_home, tmp_path, {"challenger_weight": 0.3}, env=never) as stack:
        state: dict[str, float] = {}

        def stop_soon() -> None:
            time.sleep(3.0)  # let the load run and the buffer fill between flushes
            state["sent_at"] = time.monotonic()
            stack.router.signal(signal.SIGTERM)

        stopper = threading.Thread(target=stop_soon)
        stopper.start()
        outcomes = asyncio.run(fire(f"{stack.router.url}/predict", bodies, concurrency=16, stop_on_error=True))
        stopper.join()
        code = stack.router.proc.wait(60) if stack.router.proc else None
    answered = {o.body["request_id"] for o in outcomes if o.status == 200}
    assert len(answered) > 200, f"only {len(answered)} answers before the stop"
    assert code == 0, f"router exited with {code}"
    log = logs.read_predictions(stack.predictions_url)
    missing = answered - set(log["request_id"])
    assert not missing, f"{len(missing)} answered requests are not in the log, e.g. {sorted(missing)[:3]}"
    assert log["request_id"].is_unique
    # nothing is logged that was not scored: every logged id was sent
    assert set(log["request_id"]) <= {o.body["request_id"] for o in outcomes}


def test_champion_down_is_a_503_with_retry_after(serving_home: Path, tmp_path: Path) -> None:
    bodies = transactions(20, seed=23)
    with serving_stack(serving_home, tmp_path, {"challenger_weight": 0.0}) as stack:
        ok = httpx.post(f"{stack.router.url}/predict", json=bodies[0])
        assert ok.status_code == 200
        stack.champion.kill()
        r = httpx.post(f"{stack.router.url}/predict", json=bodies[1])
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1" and r.headers["x-request-id"] == bodies[1]["request_id"]
        assert "champion cannot answer" in r.json()["error"]
        bad = httpx.post(f"{stack.router.url}/predict", json={"features": {"nope": 1}})
        assert bad.status_code == 400  # bad input is still a 4xx, not a 503 or 5xx
