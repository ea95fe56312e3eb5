"""The drift job (the CronJob's entry point): observe -> analyse -> act.

1. **Observe**: the champion's (and, when there is one, the challenger's) drift reference from MLflow
   by alias -> version -> run artifact, or from a folder; the latest window of the prediction log.
2. **Analyse**: `drift_service.analysis.analyse` — pure.
3. **Act**: write ``drift.json`` and ``report.html``; log both to an MLflow run tagged with the model
   versions; push the gauges to a Pushgateway when one is configured.

Any failure to observe or act raises a `KingmakerError` (one line, non-zero exit); drift itself is a
successful run. The Pushgateway is pushed last, so ``kingmaker_drift_last_success_timestamp_seconds``
only moves when everything else worked.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from drift_service import window as window_loader
from drift_service.analysis import ArmReference, DriftResult, Policy, Window, analyse
from drift_service.document import mlflow_metrics, to_document
from drift_service.pushgateway import DEFAULT_JOB
from kingmaker import drift_result, mlflow_errors
from kingmaker.drift_result import Context
from kingmaker.errors import PermanentError
from kingmaker.logs import now
from kingmaker.reference import Reference
from kingmaker.roles import Arm
from kingmaker.settings import MlflowSettings

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

HTML_FILE = "report.html"


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True)
class JobSettings:
    """Everything one run of the drift job needs, read once at the entry point."""

    predictions_url: str = field(metadata=_doc("prediction log dataset (folder or fsspec URL)"))
    output_dir: Path = field(metadata=_doc("folder for drift.json and report.html"))
    mlflow: MlflowSettings = field(metadata=_doc("tracking store holding the model registry"))
    window: timedelta | None = field(default=timedelta(hours=24),
                                     metadata=_doc("analyse the log rows of this long a time span"))
    rows: int | None = field(default=None, metadata=_doc("or the latest N requests instead of a time span"))
    until: datetime | None = field(default=None, metadata=_doc("end of the window (default: now)"))
    reference_dir: Path | None = field(default=None,
                                       metadata=_doc("use this drift_reference folder instead of MLflow"))
    champion_alias: str = field(default="champion", metadata=_doc("registry alias of the champion"))
    challenger_alias: str = field(default="challenger", metadata=_doc("registry alias of the challenger"))
    log_to_mlflow: bool = field(default=True, metadata=_doc("log drift.json and the report as an MLflow run"))
    experiment: str = field(default="kingmaker-drift", metadata=_doc("MLflow experiment of drift runs"))
    pushgateway_url: str | None = field(default=None, metadata=_doc("Pushgateway to push gauges to"))
    pushgateway_job: str = field(default=DEFAULT_JOB, metadata=_doc("Pushgateway job label"))
    pushgateway_labels: tuple[tuple[str, str], ...] = field(
        default=(), metadata=_doc("extra grouping labels of the push (e.g. championchallenger, namespace)"))
    categorical: tuple[str, ...] = field(default=(), metadata=_doc("features compared by category"))
    policy: Policy = field(default_factory=Policy, metadata=_doc("drift thresholds"))

    def __post_init__(self) -> None:
        if (self.window is None) == (self.rows is None):
            raise ValueError("give exactly one of window and rows")

    @property
    def needs_mlflow(self) -> bool:
        return self.reference_dir is None or self.log_to_mlflow


@dataclass(frozen=True)
class Outcome:
    result: DriftResult
    context: Context
    json_path: Path
    html_path: Path
    run_id: str | None
    pushed: bool
    seconds: float


@dataclass(frozen=True)
class _References:
    champion: Reference
    arms: tuple[ArmReference, ...]
    source: str


def _references(settings: JobSettings, client: MlflowClient | None, tmp: Path) -> _References:
    from drift_service import tracking

    if settings.reference_dir is not None:
        ref = tracking.load_reference(settings.reference_dir)
        return _References(ref, (ArmReference(Arm.CHAMPION, None, ref), ArmReference(Arm.CHALLENGER, None, None)),
                           str(settings.reference_dir))
    assert client is not None
    name = settings.mlflow.model_name
    champ = tracking.fetch_reference(client, name, settings.champion_alias, tmp / "champion", required=True)
    assert champ is not None
    chall = tracking.fetch_reference(client, name, settings.challenger_alias, tmp / "challenger", required=False)
    arms = [ArmReference(Arm.CHAMPION, champ.version, champ.reference)]
    if chall is not None:
        arms.append(ArmReference(Arm.CHALLENGER, chall.version, chall.reference))
    source = f"models:/{name}@{settings.champion_alias} (version {champ.version}, run {champ.run_id})"
    return _References(champ.reference, tuple(arms), source)


def run(settings: JobSettings) -> Outcome:
    """One drift run; raises `KingmakerError` (one line) when it cannot complete."""
    started = time.monotonic()
    until = settings.until or now()
    client = _client(settings)
    refs, window = _observe(settings, client, until)
    result = analyse(window, refs.champion, refs.arms, settings.policy, categorical=frozenset(settings.categorical))
    versions = {a.arm: a.model_version for a in refs.arms}
    context = Context(model_name=settings.mlflow.model_name, champion_version=versions.get(Arm.CHAMPION),
                      challenger_version=versions.get(Arm.CHALLENGER), reference_source=refs.source,
                      predictions_url=settings.predictions_url, since=window.since, until=until, created=now())
    return _act(settings, client, result, context, started)


def _client(settings: JobSettings) -> MlflowClient | None:
    if not settings.needs_mlflow:
        return None
    store = Path(settings.mlflow.tracking_uri.removeprefix("sqlite:///"))
    if settings.reference_dir is None and settings.mlflow.is_local_sqlite and not store.exists():
        raise PermanentError(f"no reference: there is no MLflow store at {store} yet (train and register "
                             "a model first: kingmaker train)")
    mlflow_errors.check_reachable(settings.mlflow.tracking_uri)
    return settings.mlflow.client()


def _observe(settings: JobSettings, client: MlflowClient | None, until: datetime) -> tuple[_References, Window]:
    with tempfile.TemporaryDirectory(prefix="kingmaker-drift-") as tmp:
        refs = _references(settings, client, Path(tmp))
    window = window_loader.load(settings.predictions_url, refs.champion.features, until=until,
                                window=settings.window, rows=settings.rows)
    log.info("window: %d rows from %s", len(window.frame), settings.predictions_url)
    return refs, window


def _act(settings: JobSettings, client: MlflowClient | None, result: DriftResult, context: Context,
         started: float) -> Outcome:
    """Files, then the MLflow run, then the Pushgateway (last: its timestamp means "all went well")."""
    json_path, html_path = write(result, context, settings.output_dir)
    run_id = None
    if settings.log_to_mlflow:
        assert client is not None
        run_id = _log_run(client, settings, result, context, [json_path, html_path])
    seconds = time.monotonic() - started
    if settings.pushgateway_url:
        from drift_service import pushgateway

        registry = pushgateway.build_registry(result, champion_version=context.champion_version,
                                              duration_seconds=seconds, finished_at=time.time())
        pushgateway.push(settings.pushgateway_url, registry, job=settings.pushgateway_job,
                         grouping_key={**dict(settings.pushgateway_labels), "model_name": settings.mlflow.model_name})
    return Outcome(result, context, json_path, html_path, run_id, bool(settings.pushgateway_url), seconds)


def write(result: DriftResult, context: Context, folder: Path) -> tuple[Path, Path]:
    """``drift.json`` and the self-contained ``report.html`` in ``folder``."""
    from drift_service import report

    json_path = drift_result.write(to_document(result, context), folder)
    html_path = folder / HTML_FILE
    html_path.write_text(report.render(result, context), encoding="utf-8")
    return json_path, html_path


def _log_run(client: MlflowClient, settings: JobSettings, result: DriftResult, context: Context,
             files: list[Path]) -> str:
    from drift_service import tracking

    tags = {
        "kingmaker.kind": "drift",
        "kingmaker.model_name": context.model_name,
        "kingmaker.model_version": context.champion_version or "unknown",
        "kingmaker.drift.severity": result.severity.value,
        "kingmaker.drift.rows": str(result.rows),
        "kingmaker.drift.drifted_features": ",".join(result.drifted_features)[:4000],
        "kingmaker.drift.reference": context.reference_source,
    }
    if context.challenger_version:
        tags["kingmaker.challenger_version"] = context.challenger_version
    if context.since is not None:
        tags["kingmaker.drift.since"] = context.since.isoformat()
    if context.until is not None:
        tags["kingmaker.drift.until"] = context.until.isoformat()
    artifact_location = settings.mlflow.artifact_root if settings.mlflow.is_local_sqlite else None
    run_name = f"drift-{(context.until or context.created):%Y%m%d-%H%M%S}"
    return tracking.log_run(client, experiment=settings.experiment, artifact_location=artifact_location,
                            run_name=run_name, tags=tags, metrics=mlflow_metrics(result), files=files)


def summary(outcome: Outcome, top: int = 10) -> str:
    """What a person reading the CronJob log wants: the verdict, the worst features, where the report is."""
    r, c = outcome.result, outcome.context
    lines = [f"drift: {r.severity.value}  ({r.rows} requests, champion v{c.champion_version or '?'}"
             + (f", challenger v{c.challenger_version}" if c.challenger_version else "") + ")"]
    ranked = sorted((f for f in r.features if f.psi is not None), key=lambda f: -(f.psi.score if f.psi else 0.0))
    if ranked:
        lines.append(f"  {'feature':<24} {'severity':<10} {'PSI':>8} {'KS p adj':>10}")
        for f in ranked[:top]:
            p_adj = f"{f.ks.score:10.3g}" if f.ks is not None else f"{'-':>10}"
            lines.append(f"  {f.name:<24} {f.severity.value:<10} {f.psi.score if f.psi else 0.0:8.4f} {p_adj}")
        if len(ranked) > top:
            lines.append(f"  ... {len(ranked) - top} more in the report")
    insufficient = [f.name for f in r.features if f.psi is None]
    if insufficient:
        lines.append(f"  insufficient data (< {r.policy.min_rows} rows): {', '.join(insufficient)}")
    for s in r.scores:
        psi = f"{s.psi.score:.4f}" if s.psi is not None else "-"
        lines.append(f"  score {s.arm.value} v{s.model_version or '?'}: {s.severity.value} "
                     f"(PSI {psi}, n={s.n_current})")
    if r.arms is not None:
        psi = f"{r.arms.psi.score:.4f}" if r.arms.psi is not None else "-"
        lines.append(f"  champion vs challenger scores: {r.arms.severity.value} (PSI {psi})")
    lines.append(f"  report: {outcome.html_path}")
    lines.append(f"  json:   {outcome.json_path}")
    if outcome.run_id:
        lines.append(f"  MLflow run: {outcome.run_id}")
    if outcome.pushed:
        lines.append("  pushed to the Pushgateway")
    lines.append(f"  took {outcome.seconds:.2f} s")
    return "\n".join(lines)
