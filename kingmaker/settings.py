"""Typed settings, one object per topic, read once at the entry point and passed down.

Every field has a one-line doc in its ``metadata["doc"]``, and a field read from the environment names its
variable in ``metadata["env"]``. Each class's ``from_env`` reads exactly those variables (through
`read_env`), and `environment_help` turns the same metadata into the "environment:" section of a command's
``--help``. Environment variables override defaults; command-line flags override both. An empty variable
counts as unset, unless the field says '' is a value (``metadata["empty"]``, e.g. "no challenger").
"""

from __future__ import annotations

import os
import textwrap
import types
import typing
from dataclasses import MISSING, Field, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kingmaker.errors import PermanentError

if TYPE_CHECKING:
    from mlflow import MlflowClient

HOME_ENV = "KINGMAKER_HOME"


def _doc(text: str, env: str | None = None, *, empty: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"doc": text}
    if env is not None:
        meta["env"] = env
    if empty:
        meta["empty"] = True
    return meta


def default_home() -> Path:
    """The project data folder: `$KINGMAKER_HOME`, else `./.kingmaker`."""
    return Path(os.environ.get(HOME_ENV, ".kingmaker")).resolve()


def _tokens(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def read_env(cls: type) -> dict[str, Any]:
    """The fields of settings class ``cls`` whose ``metadata["env"]`` variable is set, converted to the field's type.

    Types: ``str``, ``int``, ``float``, ``Path``, a ``StrEnum`` (each optionally ``| None``) and ``tuple[str, ...]``
    (a comma-separated list). A value that does not convert is a `PermanentError` naming the variable.
    """
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in fields(cls):
        var = f.metadata.get("env")
        raw = None if var is None else os.environ.get(var)
        if raw is None or (raw == "" and not f.metadata.get("empty")):
            continue
        kind = hints[f.name]
        if typing.get_origin(kind) in (typing.Union, types.UnionType):  # X | None: the X
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        if kind == tuple[str, ...]:
            values[f.name] = _tokens(raw)
        elif isinstance(kind, type) and issubclass(kind, StrEnum):
            try:
                values[f.name] = kind(raw)
            except ValueError:
                raise PermanentError(f"{var}={raw!r} is not one of {', '.join(m.value for m in kind)}") from None
        elif kind in (str, int, float, Path):
            try:
                values[f.name] = kind(raw)
            except ValueError as exc:
                raise PermanentError(f"{var}={raw!r} is not a valid {kind.__name__}") from exc
        else:  # pragma: no cover - a programming error, caught by the unit tests
            raise TypeError(f"{cls.__name__}.{f.name}: cannot read {kind} from the environment")
    return values


def _default(f: Field[Any]) -> str:
    """`` (default: x)`` for a static, meaningful default the doc does not already state."""
    if f.default is MISSING or f.default in (None, "", ()) or "default" in f.metadata["doc"]:
        return ""
    return f" (default: {f.default})"


def environment_help(*settings: type | tuple[type, str], width: int = 100) -> str:
    """The "environment:" section of a command's ``--help``: each variable the settings read, with its doc.

    ``settings`` are settings classes (all their variables) or ``(class, field name)`` for one variable.
    `KINGMAKER_HOME`, on which the embedded defaults rest, comes first.
    """
    rows = [(HOME_ENV, "data folder of the embedded defaults: MLflow SQLite store, logs, serving and "
                       "controller files (default: ./.kingmaker)")]
    for item in settings:
        cls, only = item if isinstance(item, tuple) else (item, None)
        for f in fields(cls):
            var = f.metadata.get("env")
            if var is not None and (only is None or f.name == only) and var not in {r[0] for r in rows}:
                rows.append((var, f.metadata["doc"] + _default(f)))
    name_width = max(len(name) for name, _ in rows) + 2
    lines = ["environment (command-line options win):"]
    for name, text in rows:
        lines += textwrap.wrap(text, width, initial_indent=f"  {name:<{name_width}}",
                               subsequent_indent=" " * (name_width + 2))
    return "\n".join(lines)


@dataclass(frozen=True)
class MlflowSettings:
    """Where runs and registered models live."""

    tracking_uri: str = field(metadata=_doc("MLflow tracking URI (default: SQLite file mlflow.db in the data folder)",
                                            "MLFLOW_TRACKING_URI"))
    artifact_root: str = field(metadata=_doc("where new experiments store artifacts (local default only)"))
    experiment: str = field(default="kingmaker-fraud", metadata=_doc("MLflow experiment name"))
    model_name: str = field(default="fraud-detector", metadata=_doc("registered model name", "KINGMAKER_MODEL_NAME"))

    @classmethod
    def from_env(cls, home: Path | None = None, **overrides: str | None) -> MlflowSettings:
        """Embedded default (SQLite + local artifacts under `home`) unless MLFLOW_TRACKING_URI is set."""
        home = home or default_home()
        values: dict[str, str] = {"tracking_uri": f"sqlite:///{home / 'mlflow.db'}",
                                  "artifact_root": (home / "mlartifacts").as_uri(), **read_env(cls)}
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

    predictions_url: str = field(metadata=_doc("prediction log dataset, a folder or fsspec URL (Parquet, partitioned "
                                               "by date; default: logs/predictions in the data folder)",
                                               "KINGMAKER_PREDICTIONS_URL"))
    labels_url: str = field(metadata=_doc("label log dataset, a folder or fsspec URL (default: logs/labels in the "
                                          "data folder)", "KINGMAKER_LABELS_URL"))

    @classmethod
    def from_env(cls, home: Path | None = None) -> LogSettings:
        home = home or default_home()
        return cls(**{"predictions_url": str(home / "logs" / "predictions"),
                      "labels_url": str(home / "logs" / "labels"), **read_env(cls)})


@dataclass(frozen=True)
class DriftSettings:
    """The drift job's environment; the controller reads the job's results from the same `output_dir`."""

    output_dir: Path | None = field(default=None, metadata=_doc(
        "folder the drift job writes drift.json and report.html to, and the controller reads them from (default: "
        "one sub-folder per run of drift/ in the data folder)", "KINGMAKER_DRIFT_OUTPUT_DIR"))
    window: str = field(default="24h", metadata=_doc("the drift job analyses the log rows of this long a time span, "
                                                     "e.g. 30m, 6h, 7d", "KINGMAKER_DRIFT_WINDOW"))
    experiment: str = field(default="kingmaker-drift", metadata=_doc("MLflow experiment of the drift runs",
                                                                     "KINGMAKER_DRIFT_EXPERIMENT"))
    pushgateway_url: str | None = field(default=None, metadata=_doc(
        "Prometheus Pushgateway the drift job pushes its gauges to (default: none)", "KINGMAKER_PUSHGATEWAY_URL"))

    @classmethod
    def from_env(cls) -> DriftSettings:
        return cls(**read_env(cls))

    def results_dir(self, home: Path) -> Path:
        """Where the controller looks for drift results (``drift.json`` here or one sub-folder down)."""
        return self.output_dir or home / "drift"

    def run_dir(self, home: Path, stamp: str) -> Path:
        """Where one run writes: `output_dir` itself, else a ``stamp`` sub-folder of `results_dir`."""
        return self.output_dir or self.results_dir(home) / stamp


@dataclass(frozen=True)
class ControllerSettings:
    """Where the promotion controller reads its guardrails."""

    prometheus_url: str | None = field(default=None, metadata=_doc(
        "Prometheus the controller reads the challenger's guardrails from (default: none: no guardrail is "
        "readable and nothing is promoted)", "KINGMAKER_PROMETHEUS_URL"))

    @classmethod
    def from_env(cls) -> ControllerSettings:
        return cls(**read_env(cls))


class FsyncPolicy(StrEnum):
    """When the Router forces its prediction-log segment to disk. Every row is written to the segment (the
    page cache) before its answer is sent, so a killed Router loses nothing whatever the policy; the policy
    is about the machine crashing."""

    NEVER = "never"        # the kernel writes back in its own time (a machine crash may lose the last ~30 s)
    INTERVAL = "interval"  # fsync once a second, off the request path (a machine crash loses at most ~1 s)
    ALWAYS = "always"      # fsync before every answer (nothing answered is lost; costs a disk flush per request)


@dataclass(frozen=True)
class ServingSettings:
    """How the Scorer (one per arm) and the Router run. Read once per process, in the service's __init__."""

    model_uri: str = field(default="models:/fraud-detector@champion", metadata=_doc(
        "Scorer: model to serve, models:/<name>@<alias> or models:/<name>/<version>", "KINGMAKER_MODEL_URI"))
    arm: str = field(default="champion", metadata=_doc("Scorer: the arm this process serves (metric label)",
                                                       "KINGMAKER_ARM"))
    champion_url: str = field(default="http://127.0.0.1:3001", metadata=_doc(
        "Router: base URL of the champion Scorer", "KINGMAKER_CHAMPION_URL"))
    challenger_url: str = field(default="http://127.0.0.1:3002", metadata=_doc(
        "Router: base URL of the challenger Scorer ('' = none)", "KINGMAKER_CHALLENGER_URL", empty=True))
    router_config: str = field(default="", metadata=_doc(
        "Router: YAML file with mode/weights/salt, hot-reloaded ('' = built-in defaults)", "KINGMAKER_ROUTER_CONFIG"))
    max_batch_rows: int = field(default=10_000, metadata=_doc("largest batch accepted per request",
                                                              "KINGMAKER_MAX_BATCH_ROWS"))
    max_body_bytes: int = field(default=64 * 1024 * 1024, metadata=_doc(
        "largest request body accepted (413 above)", "KINGMAKER_MAX_BODY_BYTES"))
    log_flush_rows: int = field(default=2_000, metadata=_doc(
        "Router: flush the prediction log at this many rows", "KINGMAKER_LOG_FLUSH_ROWS"))
    log_flush_seconds: float = field(default=2.0, metadata=_doc(
        "Router: ... or when the oldest row is this old", "KINGMAKER_LOG_FLUSH_SECONDS"))
    log_max_buffer_rows: int = field(default=1_000_000, metadata=_doc(
        "Router: rows kept in memory while the log store is down (more wait in the segment files only)",
        "KINGMAKER_LOG_MAX_BUFFER_ROWS"))
    log_segment_dir: str = field(default="", metadata=_doc(
        "Router: local folder of the prediction-log segments, where each row is written before its answer is sent "
        "(default: serving/segments in the data folder)", "KINGMAKER_LOG_SEGMENT_DIR"))
    log_fsync: FsyncPolicy = field(default=FsyncPolicy.NEVER, metadata=_doc(
        "Router: when segments are forced to disk: never (a killed process still loses nothing), interval (every "
        "second) or always (before each answer)", "KINGMAKER_LOG_FSYNC"))
    feedback_tokens: tuple[str, ...] = field(default=(), repr=False, metadata=_doc(
        "Router: bearer tokens accepted on /feedback (comma-separated)", "KINGMAKER_FEEDBACK_TOKEN"))
    feedback_token_file: str = field(default="", metadata=_doc(
        "Router: file of /feedback tokens, one per line (re-read when it changes)", "KINGMAKER_FEEDBACK_TOKEN_FILE"))
    scoring_tokens: tuple[str, ...] = field(default=(), repr=False, metadata=_doc(
        "bearer tokens required on scoring endpoints (comma-separated; none = open)", "KINGMAKER_SCORING_TOKEN"))
    scoring_token_file: str = field(default="", metadata=_doc("file of scoring tokens, one per line",
                                                              "KINGMAKER_SCORING_TOKEN_FILE"))
    arm_tokens: tuple[str, ...] = field(default=(), repr=False, metadata=_doc(
        "the Router's own token to its arms (comma-separated: it sends the first; Scorers accept all, besides the "
        "scoring tokens)", "KINGMAKER_ARM_TOKEN"))
    arm_token_file: str = field(default="", metadata=_doc(
        "file of Router-to-arm tokens, one per line (the first is sent; re-read when it changes)",
        "KINGMAKER_ARM_TOKEN_FILE"))
    drain_seconds: float = field(default=0.0, metadata=_doc(
        "on SIGTERM, report not-ready this long before stopping (usually the chart's preStop does this)",
        "KINGMAKER_DRAIN_SECONDS"))
    feedback_lookup_days: int = field(default=30, metadata=_doc(
        "Router: days of prediction log searched for /feedback request ids", "KINGMAKER_FEEDBACK_LOOKUP_DAYS"))
    model_cache: str = field(default="", metadata=_doc(
        "Scorer: folder keeping a copy of the model version it resolved, served when the registry is unreachable "
        "at start-up ('' = no cache)", "KINGMAKER_MODEL_CACHE"))
    registry_retry_seconds: float = field(default=30.0, metadata=_doc(
        "Scorer: seconds between registry retries while it serves from its cache (or serves nothing yet)",
        "KINGMAKER_REGISTRY_RETRY_SECONDS"))

    @classmethod
    def from_env(cls, **overrides: object) -> ServingSettings:
        """Defaults, overridden by KINGMAKER_* environment variables, overridden by ``overrides``."""
        values = {**read_env(cls), **{k: v for k, v in overrides.items() if v is not None}}
        return cls(**values)
