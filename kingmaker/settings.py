"""Typed settings, one object per topic, read once at the entry point and passed down.

Every field has a one-line doc in its `metadata["doc"]`; `--help` texts are built from them.
Environment variables override defaults; command-line flags override both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow import MlflowClient


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


def default_home() -> Path:
    """The project data folder: `$KINGMAKER_HOME`, else `./.kingmaker`."""
    return Path(os.environ.get("KINGMAKER_HOME", ".kingmaker")).resolve()


@dataclass(frozen=True)
class MlflowSettings:
    """Where runs and registered models live."""

    tracking_uri: str = field(metadata=_doc("MLflow tracking URI (default: SQLite file in the data folder)"))
    artifact_root: str = field(metadata=_doc("where new experiments store artifacts (local default only)"))
    experiment: str = field(default="kingmaker-fraud", metadata=_doc("MLflow experiment name"))
    model_name: str = field(default="fraud-detector", metadata=_doc("registered model name"))

    @classmethod
    def from_env(cls, home: Path | None = None, **overrides: str | None) -> MlflowSettings:
        """Embedded default (SQLite + local artifacts under `home`) unless MLFLOW_TRACKING_URI is set."""
        home = home or default_home()
        values: dict[str, str] = {
            "tracking_uri": os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}",
            "artifact_root": (home / "mlartifacts").as_uri(),
        }
        if os.environ.get("KINGMAKER_MODEL_NAME"):
            values["model_name"] = os.environ["KINGMAKER_MODEL_NAME"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def is_local_sqlite(self) -> bool:
        return self.tracking_uri.startswith("sqlite:///")

    def client(self) -> MlflowClient:
        """An explicit client for this store (no global MLflow state is touched)."""
        from mlflow import MlflowClient

        if self.is_local_sqlite:
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)


@dataclass(frozen=True)
class LogSettings:
    """Where the prediction and label logs are written (a folder or any fsspec URL)."""

    predictions_url: str = field(metadata=_doc("prediction log dataset (Parquet, partitioned by date)"))
    labels_url: str = field(metadata=_doc("label log dataset (Parquet, partitioned by date)"))

    @classmethod
    def from_env(cls, home: Path | None = None) -> LogSettings:
        home = home or default_home()
        return cls(
            predictions_url=os.environ.get("KINGMAKER_PREDICTIONS_URL", str(home / "logs" / "predictions")),
            labels_url=os.environ.get("KINGMAKER_LABELS_URL", str(home / "logs" / "labels")),
        )
