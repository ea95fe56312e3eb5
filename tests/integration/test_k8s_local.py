"""The promotion controller in local mode, for real: `kingmaker promote` (the console script, a separate process)
against MLflow models trained by `kingmaker train`, prediction/label logs, a `kingmaker drift` result, and a REAL
Prometheus (Debian `prometheus`, installed by .ci/test) scraping router metrics named by the catalog.

- a better challenger is promoted (aliases moved, tags written, arms file re-pointed, weight reset);
- a worse one is rolled back; one breaching the error-rate guardrail is rolled back on that ground;
- the controller SIGKILLed between the alias move and the re-pointing (failpoint), then rerun, ends consistent.

The evidence is synthetic shadow traffic (transactions from `training.data.synthetic`, scores that rank frauds
better or worse), so a test controls who should win; `test_a_promotion_under_live_traffic_fails_no_request`
also runs the real `kingmaker serve` and keeps clients calling it while the controller swaps the arms.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from k8s.decide import GuardrailReadings
from k8s.sources.prometheus import GuardrailQueries, PrometheusAPI, PrometheusGuardrails
from k8s.state import Pair
from kingmaker.settings import MlflowSettings
from tests.conftest import SYNTHETIC_POINT, kingmaker
from tests.integration.bentos_support import start_serve, transactions, write_matured_traffic
from tests.integration.prometheus_support import FakeRouter
from tests.integration.prometheus_support import prometheus as local_prometheus

pytestmark = pytest.mark.integration

MODEL = "fraud-detector"
WINDOW = "20s"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- a real Prometheus scraping two fake routers (healthy and failing challenger) ----------------------

@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with FakeRouter(0.005, 0.02) as healthy, FakeRouter(0.05, 0.02) as failing:
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                  "scrape_configs": [{"job_name": name, "static_configs": [{"targets": [f"127.0.0.1:{r.port}"]}]}
                                     for name, r in (("healthy", healthy), ("failing", failing))]}
        with local_prometheus(tmp_path_factory.mktemp("prometheus"), config) as url:
            api = PrometheusAPI(url, timeout=2.0)
            deadline = time.monotonic() + 60
            while True:  # ready once both jobs have enough samples for a rate over the window
                try:
                    if all(api.query(GuardrailQueries(WINDOW, f'job="{j}"').error_rate("2")) is not None
                           for j in ("healthy", "failing")):
                        break
                except Exception:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("Prometheus did not come up with data")
                time.sleep(0.5)
            api.close()
            yield url


def test_guardrail_queries_against_real_prometheus(prometheus: str) -> None:
    api = PrometheusAPI(prometheus, timeout=5.0)
    healthy = PrometheusGuardrails(api, GuardrailQueries(WINDOW, 'job="healthy"')).readings(Pair("1", "2"))
    failing = PrometheusGuardrails(api, GuardrailQueries(WINDOW, 'job="failing"')).readings(Pair("1", "2"))
    api.close()
    # failed / (ok + failed + rejected) of challenger v2: 1 / 203 and 10 / 203; shadow_skipped, the champion and
    # the challenger's previous version v1 (all timeouts, 2 s) do not count
    assert healthy.error_rate == pytest.approx(1 / 203, rel=0.1)
    assert failing.error_rate == pytest.approx(10 / 203, rel=0.1)
    for r in (healthy, failing):
        assert r.p99_latency_seconds is not None and 0.015 < r.p99_latency_seconds <= 0.025  # 20 ms bucket
    down = PrometheusGuardrails(PrometheusAPI(f"http://127.0.0.1:{_free_port()}", timeout=1.0)).readings(Pair("1", "2"))
    assert down == GuardrailReadings()


# --- the controller end to end -----------------------------------------------------------------------

@pytest.fixture
def home(trained_home: Path, tmp_path: Path) -> Path:
    """A private copy of the trained home (v1 @champion, v2 @challenger): tests move its aliases."""
    dst = tmp_path / "home"
    shutil.copytree(trained_home, dst, ignore=shutil.ignore_patterns("logs", "controller", "serving", "drift"))
    return dst


def write_traffic(home: Path, *, better: bool) -> None:
    """Shadow traffic of v1 and v2 in the home's logs, labels matured (`write_matured_traffic`)."""
    write_matured_traffic(str(home / "logs" / "predictions"), str(home / "logs" / "labels"), champion="1",
                          challenger="2", better=better)


def policy(home: Path) -> Path:
    doc = {"apiVersion": "kingmaker.io/v1alpha1", "kind": "ChampionChallenger", "metadata": {"name": MODEL},
           "spec": {"modelName": MODEL, "traffic": {"mode": "shadow", "challengerWeight": 0.1},
                    "policy": {"labelDelaySeconds": 3600, "minLabelledPerArm": 1000, "minPositivesPerArm": 15,
                               "evaluationIntervalSeconds": 10, **SYNTHETIC_POINT}}}
    path = home / "promotion.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def promote(home: Path, prometheus: str, *extra: str, job: str = "healthy",
            env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return kingmaker("promote", "--policy", str(policy(home)), "--prometheus-url", prometheus,
                     "--prometheus-selector", f'job="{job}"', "--guardrail-window", WINDOW, *extra,
                     home=home, env=env, check=check, timeout=300)


def drift(home: Path) -> None:
    kingmaker("drift", "--window", "6h", "--no-mlflow-log", "--output-dir", str(home / "drift" / "run"), home=home,
              timeout=300)


def registry(home: Path) -> Any:
    return MlflowSettings.from_env(home=home, tracking_uri=f"sqlite:///{home}/mlflow.db").client()


def aliases(home: Path) -> dict[str, str]:
    return {k: str(v) for k, v in registry(home).get_registered_model(MODEL).aliases.items()}


def status(home: Path) -> dict[str, Any]:
    return dict(json.loads((home / "controller" / f"{MODEL}.json").read_text())["status"])


def served(home: Path) -> dict[str, Any]:
    return dict(yaml.safe_load((home / "serving" / "arms.yaml").read_text())["arms"])


def router(home: Path) -> dict[str, Any]:
    return dict(yaml.safe_load((home / "serving" / "router.yaml").read_text()))


def test_a_better_challenger_is_promoted(home: Path, prometheus: str) -> None:
    write_traffic(home, better=True)
    drift(home)
    dry = json.loads(promote(home, prometheus, "--dry-run", "--json").stdout)
    assert (dry["outcome"], dry["reason"]) == ("PROMOTE", "ChallengerBetter"), dry["message"]
    assert dry["evidence"]["score_psi"] is not None  # the real drift job's arm-vs-arm PSI
    assert aliases(home) == {"champion": "1", "challenger": "2"}  # dry run changed nothing

    out = promote(home, prometheus, "--once").stdout
    assert "PROMOTE (ChallengerBetter)" in out
    assert aliases(home) == {"champion": "2", "previous-champion": "1"}
    tags2, tags1 = registry(home).get_model_version(MODEL, "2").tags, registry(home).get_model_version(MODEL, "1").tags
    assert tags2["kingmaker.promotion.reason"] == "ChallengerBetter"
    assert json.loads(tags2["kingmaker.promotion.evidence"])["challenger"]["version"] == "2"
    assert tags1["kingmaker.demotion.replaced_by"] == "2" and tags1["kingmaker.champion_until"]
    st = status(home)
    assert st["phase"] == "Promoted" and st["championVersion"] == "2"
    assert [h["action"] for h in st["history"]] == ["Promoted"]
    assert served(home) == {"champion": {"version": "2", "model_uri": f"models:/{MODEL}/2"}, "challenger": None}
    assert (router(home)["mode"], router(home)["challenger_weight"]) == ("split", 0.0)


def test_a_promotion_under_live_traffic_fails_no_request(home: Path, prometheus: str, tmp_path: Path) -> None:
    """The real `kingmaker serve` follows the controller's swap: clients keep calling the router while the
    champion moves from v1 to v2, and not one request fails."""
    write_traffic(home, better=True)
    drift(home)
    proc, urls, text = start_serve(home, tmp_path, "--weight", "0.5")
    answers: list[tuple[str, str]] = []
    failures: list[str] = []
    stop = threading.Event()

    def clients() -> None:
        bodies = transactions(400, seed=5)
        with httpx.Client(timeout=30) as http:
            i = 0
            while not stop.is_set():
                r = http.post(f"{urls['router']}/predict", json={**bodies[i % len(bodies)], "request_id": None})
                i += 1
                if r.status_code == 200:
                    answers.append((r.json()["arm"], r.json()["model_version"]))
                else:
                    failures.append(f"{r.status_code} {r.text[:200]}")

    worker = threading.Thread(target=clients)
    try:
        assert "Ctrl-C stops everything" in text, text
        worker.start()
        deadline = time.monotonic() + 60
        while len(set(answers)) < 2:  # both arms answering before the swap
            assert time.monotonic() < deadline, answers[-5:]
            time.sleep(0.2)
        out = promote(home, prometheus, "--once").stdout
        assert "PROMOTE (ChallengerBetter)" in out
        before = len(answers)
        deadline = time.monotonic() + 180
        while ("champion", "2") not in answers[before:]:  # serve re-points the champion arm to v2
            assert time.monotonic() < deadline and proc.poll() is None, answers[-5:]
            time.sleep(0.2)
        switched = answers.index(("champion", "2"), before)
        while len(answers) < switched + 20:  # a busy machine answers slowly: count answers, not seconds
            assert time.monotonic() < deadline and proc.poll() is None, answers[-5:]
            time.sleep(0.2)
    finally:
        stop.set()
        if worker.is_alive():
            worker.join(timeout=60)
        proc.send_signal(signal.SIGINT)
        served_out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, served_out[-3000:]
    assert not failures, failures[:3]
    assert {("champion", "1"), ("challenger", "2")} <= set(answers[:before])
    settled = answers[switched:]  # one Router worker: once it answers from v2, every later answer does
    assert set(settled) == {("champion", "2")}, settled  # weight 0 after promotion: only the new champion
    assert aliases(home) == {"champion": "2", "previous-champion": "1"}


def test_a_worse_challenger_is_rolled_back(home: Path, prometheus: str) -> None:
    write_traffic(home, better=False)
    drift(home)
    out = promote(home, prometheus, "--once").stdout
    assert "ROLLBACK (ChallengerWorse)" in out
    assert aliases(home) == {"champion": "1", "challenger": "2"}
    assert registry(home).get_model_version(MODEL, "2").tags["kingmaker.rollback.reason"] == "ChallengerWorse"
    assert status(home)["phase"] == "RolledBack"
    assert router(home)["challenger_weight"] == 0.0
    assert served(home)["champion"]["version"] == "1"


def test_a_guardrail_breach_rolls_back_even_a_better_challenger(home: Path, prometheus: str) -> None:
    write_traffic(home, better=True)
    drift(home)
    out = promote(home, prometheus, "--once", job="failing").stdout
    assert "ROLLBACK (GuardrailBreached)" in out and "error rate" in out
    assert aliases(home)["champion"] == "1"


def test_killed_between_alias_move_and_repointing_then_rerun_is_consistent(home: Path, prometheus: str) -> None:
    write_traffic(home, better=True)
    drift(home)
    crashed = promote(home, prometheus, "--once", env={"KINGMAKER_FAILPOINTS": "after-alias-move"}, check=False)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    # the alias moved, the arms did not: inconsistent, but the intent is on disk
    assert aliases(home)["champion"] == "2"
    assert status(home)["phase"] == "Promoting"
    assert (status(home)["championVersion"], status(home)["challengerVersion"]) == ("1", "2")
    assert served(home)["champion"]["version"] == "1"

    out = promote(home, prometheus, "--once").stdout  # the restarted controller
    assert "phase Promoted, champion v2" in out
    assert aliases(home) == {"champion": "2", "previous-champion": "1"}
    assert served(home)["champion"]["version"] == "2" and served(home)["challenger"] is None
    assert router(home)["challenger_weight"] == 0.0
    st = status(home)
    assert st["phase"] == "Promoted" and [h["action"] for h in st["history"]] == ["Promoted"]
    tags = registry(home).get_model_version(MODEL, "2").tags
    assert tags["kingmaker.promotion.time"] == st["history"][0]["time"]
    events = [json.loads(x)["reason"] for x in (home / "controller" / f"{MODEL}.events.jsonl").read_text().splitlines()]
    assert events == ["ChallengerBetter", "Promoted"]  # decided once, completed once


def test_the_foreground_loop_reconciles_and_stops_cleanly(home: Path, prometheus: str) -> None:
    """`kingmaker promote` (no --once) loops every interval; SIGINT stops it; a second one cannot take the lock."""
    import os
    import sys

    write_traffic(home, better=False)
    exe = Path(sys.executable).with_name("kingmaker")
    env = {**os.environ, "KINGMAKER_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    args = [str(exe), "promote", "--policy", str(policy(home)), "--prometheus-url", prometheus,
            "--prometheus-selector", 'job="healthy"', "--guardrail-window", WINDOW, "--interval", "2"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (home / "controller" / f"{MODEL}.json").exists() or status(home)["phase"] != "RolledBack":
            assert time.monotonic() < deadline and proc.poll() is None, "the loop did not roll back"
            time.sleep(0.5)
        second = promote(home, prometheus, "--once", check=False)
        assert second.returncode == 2 and "another controller" in second.stderr  # one line, no traceback
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "watching fraud-detector" in out
    assert "ROLLBACK" in err  # the decision's log line


def test_prometheus_is_reachable(prometheus: str) -> None:
    assert httpx.get(f"{prometheus}/-/ready", timeout=5).status_code == 200
