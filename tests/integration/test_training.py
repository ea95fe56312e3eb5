"""`kingmaker train` against a real MLflow store (SQLite), then the model loaded back in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from kingmaker.settings import MlflowSettings
from tests.conftest import kingmaker

pytestmark = pytest.mark.integration

RELOAD = r"""
import json, sys
import numpy as np, pandas as pd
import mlflow.pyfunc, mlflow.xgboost, mlflow.sklearn
from mlflow.models import Model
uri, preds_path, flavor = sys.argv[1], sys.argv[2], sys.argv[3]
preds = pd.read_parquet(preds_path)
features = Model.load(uri).get_input_schema().input_names()
x = preds[features]
# the flavor's own loader through the standard models:/ URI (MLFLOW_TRACKING_URI from the environment)
native = (mlflow.xgboost if flavor == "xgboost" else mlflow.sklearn).load_model(uri)
flavor_scores = native.predict_proba(x)[:, 1]
# kingmaker's serving loader
from kingmaker.settings import MlflowSettings
from kingmaker import models
import os
client = MlflowSettings.from_env().client()
model = models.load_uri(client, uri)
print(json.dumps({"version": model.ref.version, "threshold": model.threshold,
                  "exact": bool(np.array_equal(model.predict_proba(x), preds["score"].to_numpy())),
                  "flavor_max_diff": float(np.max(np.abs(flavor_scores - preds["score"].to_numpy())))}))
"""


def test_train_registers_versions_that_reload_exactly_in_a_fresh_process(trained_home: Path) -> None:
    settings = MlflowSettings.from_env(home=trained_home, tracking_uri=f"sqlite:///{trained_home / 'mlflow.db'}")
    client = settings.client()
    champion = client.get_model_version_by_alias("fraud-detector", "champion")
    challenger = client.get_model_version_by_alias("fraud-detector", "challenger")
    assert (str(champion.version), str(challenger.version)) == ("1", "2")

    for mv, flavor in ((champion, "xgboost"), (challenger, "sklearn")):
        alias = "champion" if mv is champion else "challenger"
        for tag in ("test.pr_auc", "test.roc_auc", "test.pr_auc_ci_low", "threshold", "git_commit", "kingmaker.candidate"):
            assert tag in mv.tags, tag
        artifacts = {a.path for a in client.list_artifacts(mv.run_id)}
        assert {"model", "plots", "drift_reference", "test_predictions.parquet"} <= artifacts
        plots = {a.path for a in client.list_artifacts(mv.run_id, "plots")}
        assert plots == {f"plots/{n}.png" for n in ("pr_curve", "roc", "calibration", "feature_importance")}
        ref = {a.path for a in client.list_artifacts(mv.run_id, "drift_reference")}
        assert ref == {"drift_reference/sample.parquet", "drift_reference/bins.json"}

        preds = Path(client.download_artifacts(mv.run_id, "test_predictions.parquet", str(trained_home / alias)))
        env = {**os.environ, "MLFLOW_TRACKING_URI": settings.tracking_uri}
        out = subprocess.run([sys.executable, "-c", RELOAD, f"models:/fraud-detector@{alias}", str(preds), flavor],
                             capture_output=True, text=True, env=env, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result["version"] == str(mv.version)
        assert result["exact"], "the served scores differ from the logged test predictions"
        assert result["flavor_max_diff"] < 1e-6
        assert result["threshold"] == pytest.approx(float(mv.tags["threshold"]), rel=1e-6)
        assert len(pd.read_parquet(preds)) == 800  # the 20% held out of 4,000 rows


def test_candidates_are_nested_runs_and_the_reference_has_bins(trained_home: Path) -> None:
    settings = MlflowSettings.from_env(home=trained_home, tracking_uri=f"sqlite:///{trained_home / 'mlflow.db'}")
    client = settings.client()
    mv = client.get_model_version_by_alias("fraud-detector", "challenger")
    exp = client.get_experiment_by_name("kingmaker-fraud")
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{mv.run_id}'")
    assert sorted(r.data.tags["kingmaker.candidate"] for r in children) == ["forest", "logreg"]
    assert all("cv_pr_auc_mean" in r.data.metrics for r in children)
    parent = client.get_run(mv.run_id)
    assert {d.dataset.name for d in parent.inputs.dataset_inputs} == {"synthetic-training", "synthetic-test"}
    folder = Path(client.download_artifacts(mv.run_id, "drift_reference", str(trained_home / "ref")))
    bins = json.loads((folder / "bins.json").read_text())
    assert set(bins["edges"]) == {*bins["features"], "score"}
    assert all(edges == sorted(edges) and len(edges) <= 9 for edges in bins["edges"].values())
    sample = pd.read_parquet(folder / "sample.parquet")
    assert list(sample.columns) == [*bins["features"], "score"] and len(sample) == 3200


def test_failures_are_one_line_and_register_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "one-class.csv"
    pd.DataFrame({"a": [1.0, 2.0, 3.0], "Class": [0, 0, 0]}).to_csv(bad, index=False)
    proc = kingmaker("train", "--data", str(bad), home=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "kingmaker train: error: one-class: label column 'Class' has a single class (0); need frauds and non-frauds"

    proc = kingmaker("train", "--data", "synthetic", "--rows", "500", "--tracking-uri", "http://127.0.0.1:9",
                     home=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "MLflow tracking store http://127.0.0.1:9 unreachable" in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_a_failing_alias_move_leaves_no_version_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    from training import data, pipeline

    def broken(self: MlflowClient, name: str, alias: str, version: str) -> None:
        raise RuntimeError("registry went away")

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", broken)
    settings = MlflowSettings.from_env(home=tmp_path, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(RuntimeError, match="registry went away"):
        pipeline.train(data.synthetic(2000, seed=3), pipeline.TrainConfig(candidates=("logreg",), folds=3, n_bootstrap=0),
                       settings)
    client = settings.client()
    assert client.search_model_versions("name = 'fraud-detector'") == []
    runs = client.search_runs([client.get_experiment_by_name("kingmaker-fraud").experiment_id],
                              "tags.`kingmaker.chosen` = 'logreg'")
    assert [r.info.status for r in runs] == ["FAILED"]


def test_the_operating_point_carries_to_the_test_part_and_is_compared_with_the_champion(tmp_path: Path) -> None:
    """The deployed model flags its target share of the held-out rows (within +-20%), and the second model's test
    cost is reported against the champion's on the same rows, as a paired difference with a bootstrap CI."""
    common = ("--data", "synthetic", "--rows", "20000", "--folds", "3", "--bootstrap", "50", "--seed", "4")
    kingmaker("train", *common, "--candidates", "logreg", home=tmp_path)
    out = kingmaker("train", *common, "--candidates", "xgboost", home=tmp_path)
    assert "vs champion version 1: test cost/1k" in out.stdout
    client = MlflowSettings.from_env(home=tmp_path, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").client()
    for alias in ("champion", "challenger"):
        mv = client.get_model_version_by_alias("fraud-detector", alias)
        m = client.get_run(mv.run_id).data.metrics
        assert m["alert_rate"] == m["test_target_alert_rate"] == pytest.approx(float(mv.tags["alert_rate"]))
        assert m["test_alert_rate"] / m["test_target_alert_rate"] == pytest.approx(1.0, abs=0.2), alias
        assert ("test_vs_champion_cost_diff_per_1k" in m) == (alias == "challenger")  # the first had no champion
        # the calibration alternative is costed on the same test rows
        assert 0.0 < m["test_calibrated_alert_rate"] < 0.5 and m["test_calibrated_cost_per_1k"] > 0.0
    diff = m["test_vs_champion_cost_diff_per_1k"]
    assert m["test_vs_champion_cost_diff_per_1k_ci_low"] <= diff <= m["test_vs_champion_cost_diff_per_1k_ci_high"]
    assert m["test_expected_cost_per_1k"] - m["test_champion_expected_cost_per_1k"] == pytest.approx(diff)
    assert m["test_champion_version"] == 1.0
