"""MLflow logging and registration through an explicit client (no global MLflow state).

One parent run per `kingmaker train`, a nested run per candidate trial. The chosen model is logged
on the parent run and registered as a new version of the model name; it gets alias ``champion``
when the model has no champion yet, otherwise ``challenger``. Versions are tagged with their test
metrics, threshold, candidate and git commit. Registration is all-or-nothing: if tagging or aliasing
fails, the new version is deleted again.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from kingmaker import mlflow_errors, reference
from kingmaker.settings import MlflowSettings
from training.data import Dataset

if TYPE_CHECKING:
    from training.pipeline import CandidateResult, TrainConfig

log = logging.getLogger(__name__)
CHAMPION, CHALLENGER = "champion", "challenger"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def signature(x: pd.DataFrame) -> ModelSignature:
    """Every feature is a required double; the output is the fraud probability."""
    return ModelSignature(inputs=Schema([ColSpec("double", c) for c in x.columns]),
                          outputs=Schema([ColSpec("double", "fraud_probability")]))


class Tracker:
    def __init__(self, settings: MlflowSettings):
        mlflow_errors.check_reachable(settings.tracking_uri)
        self.settings = settings
        self.client = settings.client()
        with mlflow_errors.translated(f"opening experiment {settings.experiment!r} at {settings.tracking_uri}"):
            exp = self.client.get_experiment_by_name(settings.experiment)
            self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(
                settings.experiment, artifact_location=settings.artifact_root if settings.is_local_sqlite else None)

    @contextmanager
    def parent_run(self, ds: Dataset, cfg: TrainConfig, tr: Dataset, te: Dataset) -> Iterator[ParentRun]:
        from training.pipeline import config_params

        run = self.client.create_run(self.experiment_id, run_name=f"train-{ds.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                                     tags={"mlflow.source.git.commit": git_commit(), "kingmaker.data": ds.source})
        parent = ParentRun(self, run.info.run_id)
        self.client.log_batch(parent.run_id, params=[Param(k, v) for k, v in config_params(cfg).items()])
        parent.log_datasets(ds, tr, te)
        try:
            yield parent
        except BaseException:
            self.client.set_terminated(parent.run_id, RunStatus.to_string(RunStatus.FAILED))
            raise
        self.client.set_terminated(parent.run_id)
        log.info("MLflow run %s in experiment %r (%s)", parent.run_id, self.settings.experiment, self.settings.tracking_uri)


class ParentRun:
    def __init__(self, tracker: Tracker, run_id: str):
        self.tracker = tracker
        self.client = tracker.client
        self.run_id = run_id

    def log_datasets(self, ds: Dataset, tr: Dataset, te: Dataset) -> None:
        from mlflow.data.pandas_dataset import from_pandas

        inputs = []
        for part, context in ((tr, "training"), (te, "test")):
            frame = part.frame[[*part.features, part.label]]
            with warnings.catch_warnings():
                # MLflow registers its local source class twice and warns the choice is ambiguous;
                # and hints that the 0/1 label column is an integer. Both are harmless here.
                warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
                warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
                dataset = from_pandas(frame, source=ds.source, targets=part.label,
                                      name=f"{ds.name}-{context}")._to_mlflow_entity()
            inputs.append(DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)]))
        self.client.log_inputs(self.run_id, datasets=inputs)

    def log_candidate(self, res: CandidateResult) -> None:
        """One nested run per candidate trial: its parameters and CV metrics."""
        run = self.client.create_run(self.tracker.experiment_id, run_name=f"{res.name}",
                                     tags={"mlflow.parentRunId": self.run_id, "kingmaker.candidate": res.name})
        now = int(time.time() * 1000)
        self.client.log_batch(
            run.info.run_id,
            params=[Param(k, str(v)) for k, v in res.params.items()],
            metrics=[Metric(k, v, now, 0) for k, v in {**res.cv, "threshold": res.threshold,
                                                      "cv_seconds": res.fit_seconds}.items()],
        )
        self.client.set_terminated(run.info.run_id)

    def log_outputs(self, model_dir: Path, plot_dir: Path, ref: reference.Reference, predictions: pd.DataFrame,
                    x_test: pd.DataFrame, chosen: CandidateResult, test_metrics: dict[str, float],
                    candidates: list[CandidateResult]) -> None:
        c = self.client
        c.log_artifacts(self.run_id, str(model_dir), "model")
        c.log_artifacts(self.run_id, str(plot_dir), "plots")
        with tempfile.TemporaryDirectory() as tmp:
            c.log_artifacts(self.run_id, str(reference.save(ref, Path(tmp) / "ref")), reference.ARTIFACT_DIR)
            pred_path = Path(tmp) / "test_predictions.parquet"
            predictions.join(x_test.reset_index(drop=True)).to_parquet(pred_path, index=False)
            c.log_artifact(self.run_id, str(pred_path))
        now = int(time.time() * 1000)
        ms = [Metric(f"test_{k}", v, now, 0) for k, v in test_metrics.items()]
        ms += [Metric(f"{r.name}_{k}", v, now, 0) for r in candidates for k, v in r.cv.items()]
        ms += [Metric(f"{r.name}_test_{k}", v, now, 0) for r in candidates for k, v in r.test.items()]
        ms.append(Metric("threshold", chosen.threshold, now, 0))
        c.log_batch(self.run_id, metrics=ms, tags=[RunTag("kingmaker.chosen", chosen.name)])

    def register(self, chosen: CandidateResult, test_metrics: dict[str, float]) -> tuple[str, str]:
        """New version with tags and alias, or nothing at all."""
        c, name = self.client, self.tracker.settings.model_name
        try:
            c.get_registered_model(name)
        except MlflowException:
            c.create_registered_model(name, description="Fraud-detection model served champion/challenger by kingmaker")
        has_champion = CHAMPION in (c.get_registered_model(name).aliases or {})
        alias = CHALLENGER if has_champion else CHAMPION
        mv = c.create_model_version(name, source=f"runs:/{self.run_id}/model", run_id=self.run_id,
                                    tags={"kingmaker.candidate": chosen.name})
        try:
            tags: dict[str, Any] = {f"test.{k}": f"{v:.6g}" for k, v in test_metrics.items()}
            tags.update({"threshold": f"{chosen.threshold:.8g}", "git_commit": git_commit(),
                         "kingmaker.registered_as": alias})
            for k, v in tags.items():
                c.set_model_version_tag(name, mv.version, k, v)
            c.set_registered_model_alias(name, alias, mv.version)
        except BaseException:
            c.delete_model_version(name, mv.version)
            raise
        log.info("registered %s version %s as @%s", name, mv.version, alias)
        return str(mv.version), alias
