"""`kingmaker drift` as the CronJob runs it: a real process against a real MLflow store (SQLite), a real
prediction log (Parquet) and a real Pushgateway (Debian's ``prometheus-pushgateway``).

The registry is built here with MlflowClient (v1 @champion, v2 @challenger, each run holding a
``drift_reference/`` artifact) so these tests do not depend on training; the last test runs the whole
chain on models trained by `kingmaker train` (the shared ``trained_home`` fixture).
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kingmaker import reference
from kingmaker.logs import append_predictions
from kingmaker.settings import MlflowSettings
from tests.conftest import kingmaker
from tests.integration.prometheus_support import pushgateway as local_pushgateway
from training.data import synthetic

if TYPE_CHECKING:
    from mlflow import MlflowClient

pytestmark = pytest.mark.integration

UNTIL = "2026-03-02T00:00:00+00:00"
SHIFTED = {"f03": 0.5, "f08": 0.5}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with local_pushgateway(tmp_path_factory.mktemp("pushgateway")) as url:
        yield url


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("kingmaker_"):
                labels = {k: v for k, v in s.labels.items() if k not in ("instance",)}
                out[(s.name, tuple(sorted(labels.items())))] = s.value
    return out


def _settings(home: Path) -> MlflowSettings:
    return MlflowSettings.from_env(home=home, tracking_uri=f"sqlite:///{home / 'mlflow.db'}")


def _log_version(client: MlflowClient, experiment_id: str, ref: reference.Reference, tmp: Path) -> str:
    """A run holding ``drift_reference/`` and a registered version of it; returns the version."""
    run = client.create_run(experiment_id)
    folder = reference.save(ref, tmp / run.info.run_id)
    client.log_artifacts(run.info.run_id, str(folder), reference.ARTIFACT_DIR)
    client.set_terminated(run.info.run_id)
    mv = client.create_model_version("fraud-detector", source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    return str(mv.version)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """KINGMAKER_HOME with fraud-detector v1 @champion, v2 @challenger and a day of shadow traffic in
    which f03 and f08 moved by 0.5 SD."""
    home = tmp_path_factory.mktemp("drift-home")
    settings = _settings(home)
    client = settings.client()
    experiment_id = client.create_experiment("kingmaker-fraud", artifact_location=settings.artifact_root)
    client.create_registered_model("fraud-detector")
    train = synthetic(rows=10_000, seed=1)
    features = list(train.features)
    rng = np.random.default_rng(0)
    champion_ref = reference.build(train.frame[features], rng.beta(1, 30, len(train.frame)), features)
    challenger_ref = reference.build(train.frame[features], rng.beta(1.3, 30, len(train.frame)), features)
    v1 = _log_version(client, experiment_id, champion_ref, home / "refs")
    v2 = _log_version(client, experiment_id, challenger_ref, home / "refs")
    client.set_registered_model_alias("fraud-detector", "champion", v1)
    client.set_registered_model_alias("fraud-detector", "challenger", v2)

    live = synthetic(rows=4000, seed=7, drift=SHIFTED, start="2026-03-01", days=1.0).frame
    ts = live["timestamp"].dt.tz_convert(None).astype("datetime64[us]")  # naive UTC (see the drift unit conftest)
    base = pd.DataFrame({"request_id": live["transaction_id"], "ts": ts, "routing_key": live["customer_id"],
                         "mode": "shadow", "model_name": "fraud-detector", "decision": False, "threshold": 0.5,
                         "latency_ms": 2.0, **{f"feat_{f}": live[f] for f in features}})
    served = base.assign(arm="champion", served=True, model_version=v1, score=rng.beta(1, 30, len(live)))
    shadow = base.assign(arm="challenger", served=False, model_version=v2, score=rng.beta(1.3, 30, len(live)))
    append_predictions(str(home / "logs" / "predictions"), pd.concat([served, shadow]), features)
    return home


def test_cronjob_run_pushes_metrics_and_logs_the_report(home: Path, pushgateway: str, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    proc = kingmaker("drift", "--window", "1d", "--until", UNTIL, "--pushgateway", pushgateway,
                     "--output-dir", str(out_dir), home=home, timeout=300)
    assert proc.stdout.startswith("drift: severe  (4000 requests, champion v1, challenger v2)"), proc.stdout
    doc = json.loads((out_dir / "drift.json").read_text())
    features = {f["name"]: f for f in doc["features"]}
    assert {n for n, f in features.items() if f["severity"] == "severe"} == set(SHIFTED)
    assert doc["context"]["reference_source"].startswith("models:/fraud-detector@champion (version 1, run ")
    assert [(s["arm"], s["model_version"]) for s in doc["scores"]] == [("champion", "1"), ("challenger", "2")]
    assert doc["arms"]["n_champion"] == doc["arms"]["n_challenger"] == 4000

    # --- the Pushgateway holds the result under catalog names, grouped by job and model
    metrics = _scrape(pushgateway)
    group = (("job", "kingmaker-drift"), ("model_name", "fraud-detector"))

    def value(name: str, **labels: str) -> float:
        return metrics[(name, tuple(sorted({**dict(group), **labels}.items())))]

    for name in ("f03", "f08", "amount", "f01"):
        f = features[name]
        assert value("kingmaker_drift_feature_psi", feature=name, model_version="1") == \
            pytest.approx(f["psi"]["score"], rel=1e-9)
        assert value("kingmaker_drift_feature_ks_pvalue", feature=name, model_version="1") == \
            pytest.approx(f["ks"]["p_adjusted"], rel=1e-9, abs=1e-300)
        expected_level = {"none": 0, "moderate": 1, "severe": 2}[f["severity"]]
        assert value("kingmaker_drift_feature_severity", feature=name, model_version="1") == expected_level
    assert value("kingmaker_drift_feature_psi", feature="f03", model_version="1") > 0.1
    assert value("kingmaker_drift_severity", model_version="1") == 2
    assert value("kingmaker_drift_features_drifted", model_version="1") == len(doc["drifted_features"])
    assert value("kingmaker_drift_window_rows", arm="champion") == 4000
    assert value("kingmaker_drift_window_rows", arm="challenger") == 4000
    assert value("kingmaker_drift_arms_score_psi", champion_version="1", challenger_version="2") == \
        pytest.approx(doc["arms"]["psi"]["score"], rel=1e-9)
    assert value("kingmaker_drift_score_psi", arm="challenger", model_version="2") == \
        pytest.approx(doc["scores"][1]["psi"]["score"], rel=1e-9)
    assert abs(value("kingmaker_drift_last_success_timestamp_seconds") - time.time()) < 300

    # --- the MLflow run holds the report and the JSON, tagged with the versions
    client = _settings(home).client()
    experiment = client.get_experiment_by_name("kingmaker-drift")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["kingmaker.model_version"] == "1"
    assert run.data.tags["kingmaker.challenger_version"] == "2"
    assert run.data.tags["kingmaker.drift.severity"] == "severe"
    assert run.data.metrics["psi/f03"] == pytest.approx(features["f03"]["psi"]["score"], rel=1e-9)
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"drift.json", "report.html"}
    downloaded = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "dl")))
    assert json.loads((downloaded / "drift.json").read_text()) == doc
    report = (downloaded / "report.html").read_text()
    assert report.count('src="data:image/png;base64,') == 2 + len(doc["features"])
    assert "champion v1 vs challenger v2" in report


def _fails(home: Path, *args: str) -> str:
    proc = kingmaker("drift", "--until", UNTIL, *args, home=home, check=False, timeout=300,
                     env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]  # (MLflow may log INFO lines before it)
    assert last.startswith("kingmaker drift: error: "), proc.stderr
    return last


def test_unreachable_tracking_server_is_one_line(home: Path, tmp_path: Path) -> None:
    err = _fails(home, "--tracking-uri", f"http://127.0.0.1:{_free_port()}", "--output-dir", str(tmp_path))
    assert "MLflow tracking store http://127.0.0.1:" in err and "unreachable" in err


def test_no_champion_is_one_line(tmp_path: Path) -> None:
    err = _fails(tmp_path, "--output-dir", str(tmp_path / "out"))
    assert "no reference: there is no MLflow store at" in err and "kingmaker train" in err
    assert not (tmp_path / "mlflow.db").exists()
    settings = _settings(tmp_path)
    settings.client().create_registered_model("fraud-detector")  # a registry without the alias
    err = _fails(tmp_path, "--output-dir", str(tmp_path / "out"))
    assert "no reference: fraud-detector@champion not found in sqlite:///" in err


def test_no_data_is_one_line(home: Path, tmp_path: Path) -> None:
    err = _fails(home, "--window", "1h", "--until", "2025-01-01T00:00Z", "--output-dir", str(tmp_path))
    assert "no data: the prediction log at" in err


def test_unreachable_pushgateway_fails_after_logging_the_run(home: Path, tmp_path: Path) -> None:
    client = _settings(home).client()
    experiment = client.get_experiment_by_name("kingmaker-drift")
    before = len(client.search_runs([experiment.experiment_id])) if experiment else 0
    err = _fails(home, "--window", "1d", "--pushgateway", f"http://127.0.0.1:{_free_port()}",
                 "--output-dir", str(tmp_path / "out"))
    assert "Pushgateway http://127.0.0.1:" in err and "did not take the metrics" in err
    experiment = client.get_experiment_by_name("kingmaker-drift")
    assert experiment is not None and len(client.search_runs([experiment.experiment_id])) == before + 1
    assert (tmp_path / "out" / "report.html").exists()


def test_drift_on_models_trained_by_kingmaker_train(trained_home: Path, pushgateway: str, tmp_path: Path) -> None:
    """The whole chain: `kingmaker train` logs the reference, real models score shifted traffic, and
    `kingmaker drift` finds the two shifted features through the registry aliases."""
    from kingmaker import models

    client = _settings(trained_home).client()
    live = synthetic(rows=3000, seed=11, drift=SHIFTED, start="2026-03-01", days=1.0).frame
    ts = live["timestamp"].dt.tz_convert(None).astype("datetime64[us]")
    log_url = str(tmp_path / "predictions")
    for alias, served in (("champion", True), ("challenger", False)):
        model = models.load_uri(client, f"models:/fraud-detector@{alias}")
        features = list(model.features)
        rows = pd.DataFrame({"request_id": live["transaction_id"], "ts": ts, "routing_key": live["customer_id"],
                             "arm": alias, "served": served, "mode": "shadow", "model_name": "fraud-detector",
                             "model_version": model.ref.version,
                             "score": model.predict_proba(live[features]), "decision": False,
                             "threshold": model.threshold, "latency_ms": 1.0,
                             **{f"feat_{f}": live[f] for f in features}})
        append_predictions(log_url, rows, features)
    proc = kingmaker("drift", "--window", "1d", "--until", UNTIL, "--predictions-url", log_url,
                     "--pushgateway", pushgateway, "--pushgateway-job", "kingmaker-drift-trained",
                     "--output-dir", str(tmp_path / "out"), home=trained_home, timeout=300)
    assert "champion v1, challenger v2" in proc.stdout.splitlines()[0]
    doc = json.loads((tmp_path / "out" / "drift.json").read_text())
    severe = {f["name"] for f in doc["features"] if f["severity"] == "severe"}
    assert severe == set(SHIFTED)
    assert {(s["arm"], s["model_version"]) for s in doc["scores"]} == {("champion", "1"), ("challenger", "2")}
    assert all(s["n_current"] == 3000 for s in doc["scores"])
    metrics = _scrape(pushgateway)
    assert metrics[("kingmaker_drift_severity", (("job", "kingmaker-drift-trained"),
                                                 ("model_name", "fraud-detector"), ("model_version", "1")))] == 2
