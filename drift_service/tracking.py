"""MLflow side of the drift job: find each arm's drift reference by alias, and log the job's run.

Everything goes through an explicit ``MlflowClient(tracking_uri=...)`` passed in by the caller; this
module sets no global MLflow state. Lookup is alias -> model version -> the run that produced it ->
its ``drift_reference/`` artifact folder (written by training, read with `kingmaker.reference.load`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, RunStatus
from mlflow.exceptions import MlflowException

from kingmaker import mlflow_errors
from kingmaker import reference as reference_format
from kingmaker.errors import PermanentError
from kingmaker.reference import Reference

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedReference:
    alias: str
    version: str
    run_id: str
    reference: Reference


def fetch_reference(client: MlflowClient, model_name: str, alias: str, dst: Path, *,
                    required: bool) -> ResolvedReference | None:
    """The drift reference of ``model_name@alias``, downloaded into ``dst``.

    A missing alias is a `PermanentError` when ``required`` (the champion), else ``None`` (no
    challenger yet). A version whose run has no reference artifact is always a `PermanentError`.
    """
    uri = client.tracking_uri
    try:
        version = client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        if not mlflow_errors.is_permanent(exc):
            raise mlflow_errors.error(f"reading {model_name}@{alias} from {uri}", exc) from exc
        if not required:
            log.info("no %s@%s in %s: skipping that arm", model_name, alias, uri)
            return None
        raise PermanentError(f"no reference: {model_name}@{alias} not found in {uri} "
                             f"({mlflow_errors.first_line(exc)})") from exc
    if not version.run_id:
        raise PermanentError(f"no reference: {model_name} version {version.version} (@{alias}) has no run")
    dst.mkdir(parents=True, exist_ok=True)
    what = f"downloading {reference_format.ARTIFACT_DIR}/ of run {version.run_id} from {uri}"
    try:
        local = client.download_artifacts(version.run_id, reference_format.ARTIFACT_DIR, str(dst))
    except MlflowException as exc:
        if mlflow_errors.is_permanent(exc):
            raise PermanentError(f"no reference: run {version.run_id} of {model_name} version "
                                 f"{version.version} (@{alias}) has no {reference_format.ARTIFACT_DIR}/ "
                                 "artifact") from exc
        raise mlflow_errors.error(what, exc) from exc
    except OSError as exc:
        raise mlflow_errors.error(what, exc) from exc
    return ResolvedReference(alias, str(version.version), version.run_id, load_reference(Path(local)))


def load_reference(folder: Path) -> Reference:
    """`kingmaker.reference.load` with its failures as one-line `PermanentError`s."""
    try:
        return reference_format.load(folder)
    except FileNotFoundError as exc:
        raise PermanentError(f"no reference: {folder} lacks {Path(exc.filename or '').name or 'a file'}") from exc
    except (ValueError, KeyError, OSError) as exc:
        raise PermanentError(f"unreadable drift reference in {folder}: {mlflow_errors.first_line(exc)}") from exc


def log_run(client: MlflowClient, *, experiment: str, artifact_location: str | None, run_name: str,
            tags: Mapping[str, str], metrics: Mapping[str, float], files: Sequence[Path]) -> str:
    """One finished MLflow run holding ``metrics`` and ``files`` as artifacts; returns its id."""
    with mlflow_errors.translated(f"logging the drift run to {client.tracking_uri}"):
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found is not None else \
            client.create_experiment(experiment, artifact_location=artifact_location)
        run = client.create_run(experiment_id, tags=dict(tags), run_name=run_name)
        run_id = run.info.run_id
        timestamp = int(run.info.start_time)
        batch = [Metric(key, float(value), timestamp, 0) for key, value in metrics.items()]
        for start in range(0, len(batch), 500):  # log_batch accepts at most 1000 metrics
            client.log_batch(run_id, metrics=batch[start:start + 500])
        for path in files:
            client.log_artifact(run_id, str(path))
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
    return str(run_id)
