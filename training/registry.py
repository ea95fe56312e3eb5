"""MLflow logging and registration through an explicit client (no global MLflow state).

One parent run per `kingmaker train`, a nested run per candidate trial. The chosen model is logged
on the parent run and registered (`kingmaker.models.register`) as a new version of the model name; it
gets alias ``champion`` when the model has no champion yet, otherwise ``challenger``. Versions are tagged
with their test metrics, threshold, candidate and git commit. Registration is all-or-nothing: if aliasing
fails, the new version is deleted again.

This module takes plain values and `training.candidates.CandidateResult`s; it does not know the pipeline.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunStatus, RunTag

from kingmaker import mlflow_errors, models, reference
from kingmaker.errors import PermanentError
from kingmaker.settings import MlflowSettings
from training.candidates import CandidateResult
from training.data import Dataset

log = logging.getLogger(__name__)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Tracker:
    def __init__(self, settings: MlflowSettings):
        mlflow_errors.check_reachable(settings.tracking_uri)
        self.settings = settings
        self.client = settings.client()
        with mlflow_errors.translated(f"opening experiment {settings.experiment!r} at {settings.tracking_uri}"):
            exp = self.client.get_experiment_by_name(settings.experiment)
            self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(
                settings.experiment, artifact_location=settings.artifact_root if settings.is_local_sqlite else None)

    def champion(self) -> models.FraudModel | None:
        """The model the registry's ``@champion`` alias points at, loaded; None when there is none yet."""
        name = self.settings.model_name
        try:
            ref = models.resolve(self.client, name, "champion")
        except PermanentError:
            return None
        return models.load(self.client, ref)

    @contextmanager
    def parent_run(self, ds: Dataset, params: Mapping[str, str], tr: Dataset, te: Dataset) -> Iterator[ParentRun]:
        """One parent run with the training's ``params`` and both data parts as inputs."""
        run = self.client.create_run(self.experiment_id, run_name=f"train-{ds.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                                     tags={"mlflow.source.git.commit": git_commit(), "kingmaker.data": ds.source})
        parent = ParentRun(self, run.info.run_id)
        self.client.log_batch(parent.run_id, params=[Param(k, v) for k, v in params.items()])
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
        c.log_artifacts(self.run_id, str(model_dir), models.MODEL_ARTIFACT)
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
        if chosen.alert_rate is not None:
            ms.append(Metric("alert_rate", chosen.alert_rate, now, 0))
        c.log_batch(self.run_id, metrics=ms, tags=[RunTag("kingmaker.chosen", chosen.name)])

    def register(self, chosen: CandidateResult, test_metrics: dict[str, float]) -> tuple[str, str]:
        """New version with tags and alias, or nothing at all."""
        name = self.tracker.settings.model_name
        tags = {f"test.{k}": f"{v:.6g}" for k, v in test_metrics.items()}
        if chosen.alert_rate is not None:
            tags["alert_rate"] = f"{chosen.alert_rate:.6g}"
        tags.update({"kingmaker.candidate": chosen.name, "threshold": f"{chosen.threshold:.8g}",
                     "git_commit": git_commit()})
        version, alias = models.register(self.client, name, self.run_id, tags=tags)
        log.info("registered %s version %s as @%s", name, version, alias)
        return version, alias
