"""Real processes under load: the challenger killed mid-run (no client sees a failure), the Router
stopped with SIGTERM or killed with SIGKILL (no answered request is missing from the log), the champion down
(503), and `kingmaker serve` restarting a killed Scorer while the Router answers every request."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from bentos.routing import choose_arm
from kingmaker import logs
from tests.conftest import PATIENT

from .bentos_support import Outcome, fire, serving_stack, start_serve, transactions, wait_until

pytestmark = pytest.mark.integration
ENOUGH = 500  # answers before the Router is stopped or killed under load


def assert_every_answer_logged_once(predictions_url: str, answered: set[str], outcomes: list[Outcome]) -> None:
    """Every answered request id has its served row in the log, once; nothing is logged that was not sent."""
    log = logs.read_predictions(predictions_url)
    served = log[log["served"]]  # with pairing the other arm's rows are there too (off the path: not guaranteed)
    missing = answered - set(served["request_id"])
    assert not missing, f"{len(missing)} answered requests are not in the log, e.g. {sorted(missing)[:3]}"
    assert served["request_id"].is_unique
    assert set(log["request_id"]) <= {o.body["request_id"] for o in outcomes}


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
        stopped: list[int] = []

        def stop_under_load(done: int) -> None:  # counted in answers, not seconds: a busy machine answers slowly
            if done >= ENOUGH and not stopped:
                stopped.append(done)
                stack.router.signal(signal.SIGTERM)

        outcomes = asyncio.run(fire(f"{stack.router.url}/predict", bodies, concurrency=16, stop_on_error=True,
                                    on_progress=stop_under_load))
        code = stack.router.proc.wait(60) if stack.router.proc else None
    answered = {o.body["request_id"] for o in outcomes if o.status == 200}
    assert len(answered) >= ENOUGH, f"only {len(answered)} answers before the stop"
    assert code == 0, f"router exited with {code}"
    assert_every_answer_logged_once(stack.predictions_url, answered, outcomes)


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


def test_sigkill_of_the_router_under_load_loses_no_answered_row(serving_home: Path, tmp_path: Path) -> None:
    """Answered => logged: the Router is killed (no shutdown flush, as the OOM killer would) while answering,
    restarted on the same segment folder, and every request it answered is in the prediction log, once."""
    bodies = transactions(50_000, seed=24)  # more than can be sent before the kill
    never = {"KINGMAKER_LOG_FLUSH_SECONDS": "3600", "KINGMAKER_LOG_FLUSH_ROWS": "1000000"}  # all still local
    with serving_stack(serving_home, tmp_path, {"challenger_weight": 0.3}, env=never) as stack:
        killed: list[int] = []

        def kill_under_load(done: int) -> None:
            if done >= ENOUGH and not killed:
                killed.append(done)
                stack.router.kill()  # SIGKILL of the server and its worker

        outcomes = asyncio.run(fire(f"{stack.router.url}/predict", bodies, concurrency=16, stop_on_error=True,
                                    on_progress=kill_under_load))
        answered = {o.body["request_id"] for o in outcomes if o.status == 200}
        before = logs.read_predictions(stack.predictions_url)
        lost_without_segments = len(answered - set(before["request_id"] if not before.empty else []))
        stack.router.start().wait_ready(240)  # moves the segments the killed one left, in the background
        stack.router.stop()
    assert len(answered) >= ENOUGH, f"only {len(answered)} answers before the kill"
    assert lost_without_segments == len(answered)  # nothing had reached the dataset: the crash lost the buffer
    assert_every_answer_logged_once(stack.predictions_url, answered, outcomes)
    assert list(Path(tmp_path / "segments").glob("*.seg")) == []


def _children_serving(serve: subprocess.Popen[str], port: int) -> list[psutil.Process]:
    """The `bentoml serve` process of ``kingmaker serve`` listening on ``port``, with its worker."""
    for child in psutil.Process(serve.pid).children():
        if f"--port {port}" in " ".join(child.cmdline()):
            return [child, *child.children(recursive=True)]
    raise AssertionError(f"no child serves port {port}")


class Load(threading.Thread):
    """Requests to the Router until stopped, from ``workers`` threads; every answer recorded."""

    def __init__(self, url: str, bodies: list[dict[str, Any]], workers: int = 3):
        super().__init__(daemon=True)
        self.url, self.bodies, self.workers = url, bodies, workers
        self.stop = threading.Event()
        self.answers: list[tuple[int, dict[str, Any]]] = []
        self.failures: list[str] = []

    def _work(self, offset: int) -> None:
        with httpx.Client(timeout=30) as http:
            i = offset
            while not self.stop.is_set():
                body = {**self.bodies[i % len(self.bodies)], "request_id": f"load-{offset}-{i}"}
                i += self.workers
                try:
                    r = http.post(self.url, json=body)
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                if r.status_code != 200:
                    self.failures.append(f"{r.status_code} {r.text[:200]}")
                else:
                    self.answers.append((len(self.answers), r.json()))

    def run(self) -> None:
        threads = [threading.Thread(target=self._work, args=(k,)) for k in range(self.workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def test_the_supervisor_restarts_a_killed_scorer_while_the_router_answers(serving_home: Path, tmp_path: Path) -> None:
    """`kingmaker serve` in split mode: the challenger's server and worker are SIGKILLed, the supervisor
    restarts it (log line, backoff) and the Router answers every request meanwhile (fallback to the champion).
    Then the champion, with `champion_fallback: challenger`: the challenger stands in, again 0 failures."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(serving_home / "mlflow.db", home / "mlflow.db")
    serve, urls, text = start_serve(home, tmp_path, "--weight", "0.5")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(serve.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    load = Load(f"{urls['router']}/predict", transactions(500, seed=25))
    try:
        assert "Ctrl-C stops everything" in text, text

        def arm_answers(arm: str, fallback: bool, since: int) -> int:
            return sum(1 for _, a in load.answers[since:] if a["arm"] == arm and a["fallback"] is fallback)

        # Patient arm timeouts: on a busy machine a challenger that also scores the champion's rows (pairing) can
        # take longer than 300 ms, and a timed-out challenger with the champion down is a 503 by design.
        config = home / "serving" / "router.yaml"
        config.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()), **PATIENT}, sort_keys=False))
        time.sleep(1.5)  # re-read within a second
        load.start()
        wait_until(lambda: arm_answers("challenger", False, 0) >= 50, 60, "challenger answers")
        for arm, stand_in in (("challenger", "champion"), ("champion", "challenger")):
            if arm == "champion":
                config.write_text(config.read_text().replace("champion_fallback: none", "champion_fallback: challenger"))
                time.sleep(1.5)  # re-read within a second
            port = int(urls[arm].rsplit(":", 1)[1])
            victims = _children_serving(serve, port)
            mark = len(load.answers)
            for p in victims:
                p.kill()
            psutil.wait_procs(victims, timeout=10)
            wait_until(lambda a=arm: f"{a} scorer is back at {urls[a]}" in "".join(lines), 240, f"the {arm} back")
            wait_until(lambda a=arm, m=mark: arm_answers(a, False, m) >= 50, 60, f"{arm} answers again")
            assert arm_answers(stand_in, True, mark) > 0, f"no {stand_in} stood in for the {arm}"
        load.stop.set()
        load.join()
        assert not load.failures, load.failures[:5]
        assert len(load.answers) > 500
        routing = httpx.post(f"{urls['router']}/routing", json={}).json()
        assert routing["champion_fallbacks"] > 0
    finally:
        load.stop.set()
        serve.send_signal(signal.SIGINT)
        serve.wait(timeout=180)
        reader.join(timeout=10)
    out = "".join(lines)
    for arm in ("challenger", "champion"):
        assert re.search(rf"{arm} scorer exited unexpectedly \(code -9(, \d+ orphaned worker\(s\) killed)?\); "
                         r"restarting it in 1s \(restart 1\)", out), out
        assert f"restarting {arm} scorer on {urls[arm]}" in out
    assert serve.returncode == 0, out
