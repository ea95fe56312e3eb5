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


def _env_tokens(name: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in os.environ.get(name, "").split(",") if t.strip())


@dataclass(frozen=True)
class ServingSettings:
    """How the Scorer (one per arm) and the Router run. Read once per process, in the service's __init__."""

    model_uri: str = field(default="models:/fraud-detector@champion",
                           metadata=_doc("Scorer: model to serve, models:/<name>@<alias> or models:/<name>/<version>"))
    arm: str = field(default="champion", metadata=_doc("Scorer: the arm this process serves (metric label)"))
    champion_url: str = field(default="http://127.0.0.1:3001", metadata=_doc("Router: base URL of the champion Scorer"))
    challenger_url: str = field(default="http://127.0.0.1:3002",
                                metadata=_doc("Router: base URL of the challenger Scorer ('' = none)"))
    router_config: str = field(default="", metadata=_doc("Router: YAML file with mode/weights/salt, hot-reloaded "
                                                          "('' = built-in defaults)"))
    max_batch_rows: int = field(default=10_000, metadata=_doc("largest batch accepted per request"))
    max_body_bytes: int = field(default=64 * 1024 * 1024, metadata=_doc("largest request body accepted (413 above)"))
    log_flush_rows: int = field(default=2_000, metadata=_doc("Router: flush the prediction log at this many rows"))
    log_flush_seconds: float = field(default=2.0, metadata=_doc("Router: ... or when the oldest row is this old"))
    log_max_buffer_rows: int = field(default=1_000_000,
                                     metadata=_doc("Router: rows kept in memory while the log store is down"))
    feedback_tokens: tuple[str, ...] = field(default=(), repr=False,
                                             metadata=_doc("Router: bearer tokens accepted on /feedback"))
    feedback_token_file: str = field(default="", metadata=_doc("Router: file of /feedback tokens, one per line "
                                                                "(re-read when it changes)"))
    scoring_tokens: tuple[str, ...] = field(default=(), repr=False,
                                            metadata=_doc("bearer tokens required on scoring endpoints (none = open)"))
    scoring_token_file: str = field(default="", metadata=_doc("file of scoring tokens, one per line"))
    drain_seconds: float = field(default=0.0, metadata=_doc("on SIGTERM, report not-ready this long before "
                                                            "stopping (usually the chart's preStop does this)"))
    feedback_lookup_days: int = field(default=30, metadata=_doc("Router: days of prediction log searched for "
                                                                 "/feedback request ids"))

    @classmethod
    def from_env(cls, **overrides: object) -> ServingSettings:
        """Defaults, overridden by KINGMAKER_* environment variables, overridden by ``overrides``."""
        env = os.environ
        values: dict[str, object] = {}
        text = {"model_uri": "KINGMAKER_MODEL_URI", "arm": "KINGMAKER_ARM",
                "champion_url": "KINGMAKER_CHAMPION_URL", "challenger_url": "KINGMAKER_CHALLENGER_URL",
                "router_config": "KINGMAKER_ROUTER_CONFIG", "feedback_token_file": "KINGMAKER_FEEDBACK_TOKEN_FILE",
                "scoring_token_file": "KINGMAKER_SCORING_TOKEN_FILE"}
        numbers = {"max_batch_rows": ("KINGMAKER_MAX_BATCH_ROWS", int),
                   "max_body_bytes": ("KINGMAKER_MAX_BODY_BYTES", int),
                   "log_flush_rows": ("KINGMAKER_LOG_FLUSH_ROWS", int),
                   "log_flush_seconds": ("KINGMAKER_LOG_FLUSH_SECONDS", float),
                   "log_max_buffer_rows": ("KINGMAKER_LOG_MAX_BUFFER_ROWS", int),
                   "drain_seconds": ("KINGMAKER_DRAIN_SECONDS", float),
                   "feedback_lookup_days": ("KINGMAKER_FEEDBACK_LOOKUP_DAYS", int)}
        for key, var in text.items():
            if var in env:
                values[key] = env[var]
        for key, (var, kind) in numbers.items():
            if env.get(var):
                try:
                    values[key] = kind(env[var])
                except ValueError as exc:
                    from kingmaker.errors import PermanentError

                    raise PermanentError(f"{var}={env[var]!r} is not a valid {kind.__name__}") from exc
        values["feedback_tokens"] = _env_tokens("KINGMAKER_FEEDBACK_TOKEN")
        values["scoring_tokens"] = _env_tokens("KINGMAKER_SCORING_TOKEN")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
