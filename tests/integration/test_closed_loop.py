"""The loop closing itself, on the production-shaped stores (a real ``mlflow server`` on PostgreSQL, its artifacts,
the prediction log and the label log in SeaweedFS S3) and with the real processes a cluster runs:

1. `kingmaker train` registers an incumbent, trained on the synthetic generator's fraud pattern, as @champion.
2. The fraud pattern moves (`drifted_pattern`): the champion alone serves the new traffic through the real Router,
   which logs it to S3; labels come back through ``/feedback`` (the product's replay, `kingmaker.replay`).
3. `kingmaker retrain` builds its set from those S3 logs, beats the champion on the newest matured window and
   registers @challenger.
4. The challenger's Scorer starts and the running Router is re-pointed to it in shadow mode by its hot-reloaded
   ``router.yaml``: more drifted traffic, more labels, not one failed request.
5. The drift job measures the window; `kingmaker promote` (local mode, guardrails from a real Prometheus) promotes.
6. Measured: the new champion's cost on the drifted pattern, at the decision each model's Scorer answers with
   (its registered threshold), against the old one's on the same fresh transactions, with a paired CI.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from bentos import procs
from kingmaker import logs
from kingmaker.replay import Replay, Row
from tests.conftest import SYNTHETIC_POINT
from tests.integration.test_k8s_local import WINDOW
from tests.integration.test_k8s_local import prometheus as prometheus  # the fixture: the guardrails' Prometheus

from . import stores
from .bentos_support import service_env, serving_stack, wait_until
from .test_stores import drifted_pattern, run_cli

pytestmark = pytest.mark.integration

MODEL = "fraud-detector"
#: The replay sends each label a second after its answer; the controller and retrain count a transaction once it
#: is this old, with its label known by then.
LABEL_DELAY_S = 10


def drifted_rows(n: int, seed: int) -> list[Row]:
    """`drifted_pattern` transactions as replay rows (ids unique per seed), each with its label."""
    ds, y = drifted_pattern(n, seed)
    feats = ds.frame[list(ds.features)].to_dict(orient="records")
    return [Row(f"loop-{seed}-{i}", f, int(label)) for i, (f, label) in enumerate(zip(feats, y, strict=True))]


def serve_and_label(router_url: str, rows: list[Row]) -> int:
    """The rows through the Router in batches of 50 with the product's own replay, each label to /feedback a second
    after its answer; not one may fail. Returns the rows answered."""
    counts = asyncio.run(Replay(router_url, "it-token", rows, batch_rows=50, label_delay_s=1.0).run())
    assert (counts.ok, counts.failed, counts.labels_sent, counts.label_failures) == (len(rows), 0, len(rows), 0), \
        counts
    return counts.ok


def promotion_policy(home: Path) -> Path:
    doc = {"apiVersion": "kingmaker.io/v1alpha1", "kind": "ChampionChallenger", "metadata": {"name": MODEL},
           "spec": {"modelName": MODEL, "traffic": {"mode": "shadow", "challengerWeight": 0.1},
                    "policy": {"labelDelaySeconds": LABEL_DELAY_S, "minLabelledPerArm": 1000, "minPositivesPerArm": 15,
                               "evaluationIntervalSeconds": 10, **SYNTHETIC_POINT,
                               # a model blind to the new pattern and one trained on it score differently by
                               # design; the guardrail is about broken challengers, not about this
                               "guardrails": {"maxScorePsi": 50.0}}}}
    path = home / "promotion.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_served_drifted_traffic_is_retrained_on_promoted_and_the_new_champion_is_cheaper(
        private_registry: stores.Registry, object_store: stores.ObjectStore, prometheus: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    from kingmaker import models
    from kingmaker.objective import Objective
    from training.operating import paired_cost_difference

    reg = private_registry
    started = time.monotonic()
    phases: dict[str, float] = {}

    def phase(name: str) -> None:
        phases[name] = round(time.monotonic() - started - sum(phases.values()))

    client = MlflowClient(tracking_uri=reg.server.url, registry_uri=reg.server.url)
    prefix = f"s3://{reg.bucket}/loop"
    predictions, labels = f"{prefix}/predictions", f"{prefix}/labels"
    home = tmp_path / "home"
    stores_env = {**object_store.env, **reg.server.env}
    env = {**stores_env, "KINGMAKER_PREDICTIONS_URL": predictions, "KINGMAKER_LABELS_URL": labels,
           "KINGMAKER_HOME": str(home)}
    for key, value in stores_env.items():  # this process reads the logs and the registry too
        monkeypatch.setenv(key, value)

    # 1. the incumbent, trained on the old pattern
    run_cli("train", "--data", "synthetic", "--rows", "5000", "--folds", "2", "--bootstrap", "10", "--n-jobs", "1",
            "--seed", "1", "--candidates", "xgboost", "--tracking-uri", reg.server.url, env={}, out_dir=tmp_path,
            name="train")
    assert {k: str(v) for k, v in client.get_registered_model(MODEL).aliases.items()} == {"champion": "1"}
    phase("train")

    serve_env = {**env, "KINGMAKER_LOG_FLUSH_SECONDS": "1.0", "KINGMAKER_LOG_FLUSH_ROWS": "1000"}
    serving = tmp_path / "serving"
    with serving_stack(home, serving, {"mode": "split", "challenger_weight": 0.0}, challenger=False,
                       env=serve_env) as stack:
        # 2. the pattern moves; the champion alone serves it
        first = drifted_rows(5000, seed=41)
        answered = serve_and_label(stack.router.url, first)
        wait_until(lambda: len(logs.read_predictions(predictions)) == len(first), 60, "the prediction log in S3")
        time.sleep(LABEL_DELAY_S + 1)  # every served transaction has matured
        phase("serve and label")

        # 3. retrain on what was served
        retrain = run_cli("retrain", "--label-delay", f"{LABEL_DELAY_S}s", "--candidates", "xgboost", "--folds", "2",
                          "--bootstrap", "50", "--n-jobs", "1", "--tracking-uri", reg.server.url, env=env,
                          out_dir=tmp_path, name="retrain")
        assert retrain.stdout.splitlines()[-1].startswith(
            f"registered: models:/{MODEL}@challenger -> version 2: the candidate passes"), retrain.stdout
        tags = client.get_model_version(MODEL, "2").tags
        assert tags["kingmaker.retrain.transactions"] == str(len(first))
        assert int(tags["kingmaker.retrain.training_frauds"]) + int(tags["kingmaker.retrain.gate_frauds"]) == sum(
            r.label for r in first)
        phase("retrain")

        # 4. the challenger joins the running Router, in shadow mode
        challenger = procs.scorer("challenger", f"models:/{MODEL}@challenger", procs.free_port(),
                                  env={**service_env(home, serving), **serve_env}, log_dir=serving / "service-logs")
        stack.services.insert(1, challenger)  # stopped with the stack
        challenger.start()
        challenger.wait_ready(240)
        config = yaml.safe_load(stack.config.read_text())
        stack.config.write_text(yaml.safe_dump({**config, "mode": "shadow", "challenger_url": challenger.url}))

        probe = drifted_rows(500, seed=40)[0]  # the generator needs enough rows for both classes
        probes = itertools.count()

        def challenger_v2() -> bool:
            """Shadow mode in force and the challenger v2 seen (the Router learns an arm's model from an answer)."""
            body = {"request_id": f"probe-{next(probes)}", "features": probe.features}
            assert httpx.post(f"{stack.router.url}/predict", json=body, timeout=30).status_code == 200
            r = httpx.post(f"{stack.router.url}/routing", json={}, timeout=10).json()
            model = r["arms"]["challenger"]["model"]
            return bool(r["config"]["mode"] == "shadow" and model and str(model["model_version"]) == "2")

        wait_until(challenger_v2, 60, "the Router in shadow mode with the challenger v2")
        second = drifted_rows(3000, seed=42)
        answered += serve_and_label(stack.router.url, second)
    # the stack is stopped: the Router flushed what it held on SIGTERM
    logged = logs.read_predictions(predictions)
    shadow_rows = logged[logged["request_id"].str.startswith("loop-42-")]
    assert len(shadow_rows) == 2 * len(second)
    assert set(shadow_rows["model_version"]) == {"1", "2"}
    time.sleep(LABEL_DELAY_S + 1)
    phase("challenger in shadow")

    # 5. drift, then the controller decides
    run_cli("drift", "--window", "2h", "--no-mlflow-log", "--output-dir", str(home / "drift" / "run"), env=env,
            out_dir=tmp_path, name="drift")
    promote = run_cli("promote", "--policy", str(promotion_policy(home)), "--prometheus-url", prometheus,
                      "--prometheus-selector", 'job="healthy"', "--guardrail-window", WINDOW, "--once", env=env,
                      out_dir=tmp_path, name="promote")
    assert "PROMOTE (ChallengerBetter)" in promote.stdout, promote.stdout
    aliases = {k: str(v) for k, v in client.get_registered_model(MODEL).aliases.items()}
    assert aliases == {"champion": "2", "previous-champion": "1"}
    evidence = json.loads((home / "controller" / f"{MODEL}.json").read_text())["status"]
    phase("drift and promote")

    # 6. the new champion against the old one on fresh transactions of the drifted pattern
    fresh = drifted_rows(20000, seed=43)
    fresh_labels = [r.label for r in fresh]
    old, new = (models.load_uri(client, f"models:/{MODEL}/{v}") for v in ("1", "2"))
    x = pd.DataFrame([r.features for r in fresh])
    decisions = {m.ref.version: m.decide(m.predict_proba(x[list(m.features)])) for m in (old, new)}
    diff = paired_cost_difference(fresh_labels, decisions["2"], decisions["1"], Objective(), n_boot=500, seed=0)
    old_cost, new_cost = diff["baseline_per_1k"], diff["baseline_per_1k"] + diff["diff_per_1k"]
    assert diff["ci_high"] < 0, diff
    print(f"\nthe loop on the production-shaped stores in {time.monotonic() - started:.0f} s: {answered} transactions "
          f"through the Router, none failed; retrained on {len(first)} served ones ({sum(r.label for r in first)} frauds); "
          f"promoted v2 ({promote.stdout.strip().splitlines()[-1]}); on {len(fresh)} fresh drifted transactions "
          f"({sum(fresh_labels)} frauds) at each Scorer's own decision: old champion v1 {old_cost:.1f} vs new "
          f"champion v2 {new_cost:.1f} per 1,000 (difference {diff['diff_per_1k']:.1f}, 95% CI "
          f"[{diff['ci_low']:.1f}, {diff['ci_high']:.1f}]); phase {evidence['phase']}; seconds per step {phases}")
