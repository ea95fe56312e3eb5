"""Every query of every dashboard returns data, on the real local stack, scraped by a real Prometheus that evaluates
the real rule files.

The stack: `kingmaker serve` (Router and both Scorers as `bentoml serve` processes, models trained by `kingmaker
train`), the drift job pushing to a real Pushgateway, and the promotion controller in local mode with its metrics
endpoint. Prometheus scrapes them every second with the labels of the label contract (`monitoring.boards`):
``namespace`` and ``championchallenger`` as target labels on the serving targets (where a cluster relabels the pod
label), exported by the controller itself, pushed by the drift job.

The story, in split mode at weight 0.5, with drifted client traffic and fraud labels throughout:
1. the champion fails for a moment (503s);
2. challenger v2 fails every call (its timeout set to 1 ms): fallbacks, then the controller rolls it back
   (ROLLBACK GuardrailBreached) and the info alert fires;
3. a new challenger v3 is registered; `kingmaker serve` starts a Scorer for it, the drift job runs, and the
   controller promotes it on matured labelled evidence (synthetic, written to the log 4 to 1 hours ago).
Then every panel, annotation and variable query of the committed dashboards runs through the HTTP API over the
dashboard's time range; none may be empty or fail (`EMPTY_BY_DESIGN` lists the exceptions and why).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bentos.procs import free_port
from kingmaker.localstack import ServingTargets
from kingmaker.settings import MlflowSettings
from monitoring import boards, generate, ruleset
from tests.conftest import SYNTHETIC_POINT, kingmaker
from tests.integration.bentos_support import start_serve, wait_until, write_matured_traffic
from tests.integration.prometheus_support import PrometheusHTTP, prometheus, pushgateway, running
from training.data import synthetic

pytestmark = pytest.mark.integration

NAMESPACE = "kingmaker-it"
NAME = "fraud-detector"  # the ChampionChallenger (metadata.name) and its registered model
RESOURCE = {"namespace": NAMESPACE, "championchallenger": NAME}
#: Queries allowed to return nothing on this run: "<dashboard title> / <panel title>" -> why. Every panel has
#: data today; an entry belongs here only for a panel that is empty by design (e.g. one showing firing alerts).
EMPTY_BY_DESIGN: dict[str, str] = {}


# --- the pieces of the story ----------------------------------------------------------------------

class Traffic(threading.Thread):
    """Clients: ~15 requests/s of drifted transactions through the Router, and their fraud labels every 50."""

    def __init__(self, router: str, token: str):
        super().__init__(daemon=True)
        self.router, self.token = router, token
        ds = synthetic(rows=5000, seed=21, fraud_rate=0.02, drift={"f01": 2.0, "f02": 1.5})
        feats = ds.frame[list(ds.features)].to_dict(orient="records")
        self.bodies = [{"ids": {"customer_id": str(c)}, "features": f}
                       for c, f in zip(ds.frame["customer_id"], feats, strict=True)]
        self.labels = ds.y.astype(int).tolist()
        self.stop = threading.Event()
        self.codes: dict[int, int] = {}

    def run(self) -> None:
        with httpx.Client(timeout=30) as http:
            pending: list[dict[str, Any]] = []
            i = 0
            while not self.stop.is_set():
                k = i % len(self.bodies)
                request_id = f"live-{i}"
                r = http.post(f"{self.router}/predict", json={**self.bodies[k], "request_id": request_id})
                self.codes[r.status_code] = self.codes.get(r.status_code, 0) + 1
                pending.append({"request_id": request_id, "label": self.labels[k]})
                if len(pending) == 50:
                    http.post(f"{self.router}/feedback", json={"labels": pending},
                              headers={"Authorization": f"Bearer {self.token}"})
                    pending = []
                i += 1
                self.stop.wait(0.06)


def edit_router_config(path: Path, **changes: Any) -> None:
    doc = yaml.safe_load(path.read_text())
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump({**doc, **changes}))
    tmp.replace(path)  # the Router re-reads it within a second


def phase(home: Path) -> str | None:
    path = home / "controller" / f"{NAME}.json"
    return str(json.loads(path.read_text())["status"]["phase"]) if path.exists() else None


# --- the test ---------------------------------------------------------------------------------------

def test_every_panel_of_every_dashboard_shows_data(trained_home: Path, tmp_path: Path) -> None:
    began = time.time()
    timings: dict[str, float] = {}
    home = tmp_path / "home"
    shutil.copytree(trained_home, home, ignore=shutil.ignore_patterns("logs", "controller", "serving", "drift"))
    log_env = {"KINGMAKER_PREDICTIONS_URL": str(tmp_path / "predictions"), "KINGMAKER_LABELS_URL": str(tmp_path / "labels")}
    client = MlflowSettings.from_env(home=home, tracking_uri=f"sqlite:///{home}/mlflow.db").client()
    v2 = client.get_model_version(NAME, "2")
    v3 = str(client.create_model_version(NAME, source=str(v2.source), run_id=v2.run_id).version)  # a retrained challenger
    write_matured_traffic(log_env["KINGMAKER_PREDICTIONS_URL"], log_env["KINGMAKER_LABELS_URL"], champion="1",
                          challenger=v3, better=True, mode="split", n=6000)
    policy = home / "championchallenger.yaml"
    policy.write_text(yaml.safe_dump({
        "apiVersion": "kingmaker.io/v1alpha1", "kind": "ChampionChallenger", "metadata": {"name": NAME},
        "spec": {"modelName": NAME, "traffic": {"mode": "split", "challengerWeight": 0.5},
                 "policy": {"labelDelaySeconds": 3600, "minLabelledPerArm": 1000, "minPositivesPerArm": 15,
                            "evaluationIntervalSeconds": 10, **SYNTHETIC_POINT,
                            # generous latency and score-PSI bars: two different model families on 2 busy cores
                            "guardrails": {"maxErrorRate": 0.05, "maxP99LatencySeconds": 2.0, "maxScorePsi": 5.0}}}}))
    drift_args = ("--no-mlflow-log", "--min-rows", "100", "--pushgateway-label", f"championchallenger={NAME}",
                  "--pushgateway-label", f"namespace={NAMESPACE}")
    env = {**os.environ, "KINGMAKER_HOME": str(home), **log_env}
    env.pop("MLFLOW_TRACKING_URI", None)

    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(pushgateway(tmp_path))
        serve, urls, text = start_serve(home, tmp_path, "--weight", "0.5")

        def stop_serve() -> None:
            serve.send_signal(signal.SIGINT)  # the Router first, so it flushes its log; then the arms
            serve.communicate(timeout=180)

        stack.callback(stop_serve)
        assert "Ctrl-C stops everything" in text, text
        timings["stack started"] = time.time() - began
        router = urls["router"]
        token = (home / "serving" / "feedback-token").read_text().split()[0]
        router_config = home / "serving" / "router.yaml"

        targets = ServingTargets(router, router_config, tmp_path / "targets.json", RESOURCE)
        targets.start()
        stack.callback(targets.stop.set)
        controller_port = free_port()
        prom_dir = tmp_path / "prometheus"
        prom_dir.mkdir()
        prom = stack.enter_context(prometheus(prom_dir, {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in sorted((generate.ROOT / "rules").glob("*.yaml"))],
            "scrape_configs": [
                {"job_name": "kingmaker-serving",
                 "file_sd_configs": [{"files": [str(targets.path)], "refresh_interval": "1s"}]},
                {"job_name": "kingmaker-controller",  # its series name their resource themselves
                 "static_configs": [{"targets": [f"127.0.0.1:{controller_port}"], "labels": {"namespace": NAMESPACE}}]},
                {"job_name": "pushgateway", "honor_labels": True,  # the drift job's labels are the pushed ones
                 "static_configs": [{"targets": [pg.removeprefix("http://")]}]},
            ]}))
        api = PrometheusHTTP(prom)
        stack.callback(api.close)
        traffic = Traffic(router, token)
        traffic.start()
        stack.callback(traffic.stop.set)
        controller = stack.enter_context(running(  # in the foreground, stopped with Ctrl-C as a user would
            [str(Path(sys.executable).with_name("kingmaker")), "promote", "--policy", str(policy),
             "--prometheus-url", prom, "--guardrail-window", "15s", "--interval", "2",
             "--metrics-port", str(controller_port)], tmp_path / "controller.log", env=env, stop=signal.SIGINT))
        wait_until(lambda: bool(api.query(ruleset.REQUESTS.record)), 60, "recorded request rates")

        # 1. the champion fails for a moment: clients get 503s
        edit_router_config(router_config, champion_timeout_ms=1)
        wait_until(lambda: traffic.codes.get(503, 0) >= 5, 30, "503s while the champion times out")
        edit_router_config(router_config, champion_timeout_ms=1000)
        # a refused label (wrong token), a label for an unknown request, a request a Scorer rejects
        assert httpx.post(f"{router}/feedback", json={"labels": [{"request_id": "x", "label": 1}]},
                          headers={"Authorization": "Bearer wrong"}).status_code == 401
        httpx.post(f"{router}/feedback", json={"labels": [{"request_id": "nobody-sent-this", "label": 0}]},
                   headers={"Authorization": f"Bearer {token}"}).raise_for_status()
        assert httpx.post(f"{urls['champion']}/score", json={"features": {"amount": "lots"}}).status_code == 400
        wait_until(lambda: phase(home) == "Evaluating", 90, "a first HOLD of challenger v2 (no matured labels)")

        # 2. challenger v2 fails every call: fallbacks, then a rollback on the error-rate guardrail
        edit_router_config(router_config, challenger_timeout_ms=1)
        wait_until(lambda: phase(home) == "RolledBack", 90, "the rollback of challenger v2")
        time.sleep(1)
        edit_router_config(router_config, challenger_timeout_ms=300)
        timings["rolled back"] = time.time() - began

        # 3. a new challenger: `kingmaker serve` starts a Scorer for it while the drift job measures the new pair
        # (its window holds the matured evidence), then the controller promotes it
        client.set_registered_model_alias(NAME, "challenger", v3)
        pool = stack.enter_context(ThreadPoolExecutor(1))
        drift = pool.submit(kingmaker, "drift", "--window", "6h", "--output-dir", str(home / "drift" / "run"),
                            "--pushgateway", pg, *drift_args, home=home, env=log_env)
        calls_v3 = f'kingmaker_router_upstream_requests_total{{model_version="{v3}", outcome="ok"}} > 0'
        wait_until(lambda: bool(api.query(calls_v3)), 180, f"traffic to challenger v{v3}")
        timings[f"v{v3} served"] = time.time() - began
        drift.result(timeout=180)  # raises with the job's stderr if it failed
        timings["drift measured"] = time.time() - began
        wait_until(lambda: phase(home) == "Promoted", 120, f"the promotion of v{v3}")
        timings["promoted"] = time.time() - began
        wait_until(lambda: bool(api.query(f'{ruleset.CONTROLLER_DECISIONS.record}{{outcome="PROMOTE"}} > 0')), 30,
                   "the promotion in the recorded decisions")
        assert controller.poll() is None, (tmp_path / "controller.log").read_text()[-3000:]

        # --- what an SRE would see -------------------------------------------------------------------------
        end = time.time()
        start = end - 3 * 3600  # the dashboards' default range: now-3h
        empty: list[str] = []
        checked = 0
        for path in sorted((generate.ROOT / "dashboards").glob("*.json")):
            for q in boards.queries(json.loads(path.read_text())):
                expr = boards.substitute(q.expr, RESOURCE)
                where = f"{q.dashboard} / {q.where}"
                if q.label is not None:
                    found = RESOURCE[q.label] in api.label_values(q.label, expr, start, end)
                elif q.instant:
                    found = bool(api.query(expr))
                else:
                    found = any(s["values"] for s in api.query_range(expr, start, end, 15))
                checked += 1
                if not found and where not in EMPTY_BY_DESIGN:
                    empty.append(f"{where}: {expr}")
        timings["queries checked"] = time.time() - began
        assert checked > 80
        assert empty == [], "queries without data:\n" + "\n".join(empty)

        rules = api.rules()
        assert len(rules) == len(ruleset.records()) + len(ruleset.alerts())
        assert [r["name"] for r in rules if r["health"] != "ok"] == []  # e.g. no many-to-many matching errors
        firing = [a["labels"] for a in api.alerts() if a["state"] == "firing"]
        assert {"alertname": "KingmakerChallengerRolledBack", "severity": "info", "outcome": "ROLLBACK",
                "reason": "GuardrailBreached", **RESOURCE} in firing, firing
        # each serving process exposes its own metrics only (one Prometheus multiprocess folder per process)
        router_text = httpx.get(f"{router}/metrics").text
        assert "kingmaker_router_requests_total" in router_text and "kingmaker_scorer_" not in router_text
        # clients were answered throughout; the 503s are the deliberate champion timeout of step 1 (a count of
        # answers would only measure how long the run took)
        assert set(traffic.codes) == {200, 503} and traffic.codes[200] > 5 * traffic.codes[503], traffic.codes

    print(f"\nmonitoring integration: {checked} dashboard queries checked; firing: "
          f"{sorted(a['alertname'] for a in firing)}; timings (s since start): "
          + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
