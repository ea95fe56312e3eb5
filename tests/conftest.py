"""Shared test helpers. Tiers: unit (default), integration, e2e (markers, see pyproject.toml)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Router timeouts for tests about routing, not about slow arms: on a busy 2-core machine an arm's answer can take
# longer than the production default (300 ms for the challenger), which would turn a routing test into a fallback.
# The operating point of the tests' synthetic worlds (~2% fraud); the product's default is the credit card's
# (alert rate 0.3%, FPR 0.1%: kingmaker/objective.py).
SYNTHETIC_POINT = {"alertRate": 0.02, "fpr": 0.01}
PATIENT = {"champion_timeout_ms": 10_000, "challenger_timeout_ms": 10_000, "shadow_timeout_ms": 30_000}


def kingmaker(*args: str, home: Path, env: dict[str, str] | None = None, timeout: float = 600,
              check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real `kingmaker` console script against the embedded default under ``home``."""
    full_env = {**os.environ, "KINGMAKER_HOME": str(home), **(env or {})}
    full_env.pop("MLFLOW_TRACKING_URI", None)
    exe = Path(sys.executable).with_name("kingmaker")
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, env=full_env, timeout=timeout, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"kingmaker {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def mlflow_store(home: Path, experiment: str) -> tuple[Any, str, str]:
    """A new MLflow store under ``home`` (SQLite, artifacts in ``home/mlartifacts``) with one experiment:
    (an explicit ``MlflowClient``, the experiment id, the tracking URI)."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return client, client.create_experiment(experiment, artifact_location=(home / "mlartifacts").as_uri()), uri


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A KINGMAKER_HOME holding fraud-detector v1 (@champion, XGBoost) and v2 (@challenger, scikit-learn),
    trained by the real CLI on small synthetic samples. Shared by integration tests that need models."""
    home = tmp_path_factory.mktemp("kingmaker-home")
    common = ("--data", "synthetic", "--rows", "4000", "--folds", "3", "--bootstrap", "20")
    kingmaker("train", *common, "--seed", "1", "--candidates", "xgboost", home=home)
    kingmaker("train", *common, "--seed", "2", "--candidates", "logreg,forest", home=home)
    return home
