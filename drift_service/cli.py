"""`kingmaker drift`: measure how the latest prediction-log window drifted from the champion's reference.

Exit 0 when the job ran — whether or not it found drift; exit 2 with one line on stderr when it could
not (no data, no reference, a store unreachable), so a failing CronJob means a broken job.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kingmaker.settings import DriftSettings, LogSettings, MlflowSettings, environment_help


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _duration(text: str) -> object:
    from drift_service.window import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _label(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` -> (NAME, VALUE), NAME a Prometheus label name the push does not set itself."""
    import re

    name, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name) or name.startswith("__"):
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with a Prometheus label name, got {text!r}")
    if name in ("job", "model_name") or not value:
        raise argparse.ArgumentTypeError(f"{name}: job and model_name are set by the job; values must not be empty")
    return name, value


def _timestamp(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO time like 2026-01-31T12:00Z: {text!r}") from exc
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def add_arguments(p: argparse.ArgumentParser) -> None:
    # Options without a fixed default explain it in their help and are absent from `args` when not
    # given (argparse.SUPPRESS), so the help formatter does not add a misleading "(default: None)".
    p.argument_default = argparse.SUPPRESS
    p.epilog = environment_help(MlflowSettings, (LogSettings, "predictions_url"), DriftSettings)
    w = p.add_argument_group("window")
    span = w.add_mutually_exclusive_group()
    span.add_argument("--window", type=_duration, metavar="DURATION",
                      help="analyse the rows of the last DURATION, e.g. 30m, 6h, 7d (default: $KINGMAKER_DRIFT_WINDOW or 24h)")
    span.add_argument("--rows", type=_positive_int, metavar="N", help="analyse the latest N requests instead")
    w.add_argument("--until", type=_timestamp, metavar="TIME", help="end of the window, ISO 8601 (default: now)")
    w.add_argument("--predictions-url",
                   help="prediction log (default: $KINGMAKER_PREDICTIONS_URL, else $KINGMAKER_HOME/logs/predictions)")
    r = p.add_argument_group("reference and MLflow")
    r.add_argument("--tracking-uri",
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else SQLite in $KINGMAKER_HOME)")
    r.add_argument("--model-name", help="registered model name (default fraud-detector)")
    r.add_argument("--champion-alias", default="champion", help="alias whose reference the features are compared with")
    r.add_argument("--challenger-alias", default="challenger", help="alias of the challenger (skipped when absent)")
    r.add_argument("--reference-dir", type=Path,
                   help="use this drift_reference folder instead of looking the champion up in MLflow")
    r.add_argument("--experiment",
                   help="MLflow experiment of drift runs (default: $KINGMAKER_DRIFT_EXPERIMENT or kingmaker-drift)")
    r.add_argument("--no-mlflow-log", action="store_true", default=False, help="do not log the result as an MLflow run")
    s = p.add_argument_group("statistics")
    s.add_argument("--psi-moderate", type=float, default=0.1, help="PSI from which a feature has drifted")
    s.add_argument("--psi-severe", type=float, default=0.25, help="PSI from which drift is severe on its own")
    s.add_argument("--alpha", type=float, default=0.05, help="significance level of the KS tests")
    s.add_argument("--correction", choices=["bh", "bonferroni", "none"], default="bh",
                   help="multiple-testing correction of KS p-values across features")
    s.add_argument("--min-rows", type=_positive_int, default=1000,
                   help="fewer rows than this give 'insufficient data', never drift")
    s.add_argument("--epsilon", type=float, default=1e-4, help="share substituted for an empty PSI bin")
    s.add_argument("--categorical", metavar="NAMES",
                   help="comma-separated features compared by category (unseen categories get their own bin)")
    o = p.add_argument_group("output")
    o.add_argument("--output-dir", type=Path,
                   help="folder for drift.json and report.html (default: $KINGMAKER_DRIFT_OUTPUT_DIR, else "
                        "$KINGMAKER_HOME/drift/<time>)")
    o.add_argument("--pushgateway", metavar="URL",
                   help="push gauges to this Prometheus Pushgateway (default: $KINGMAKER_PUSHGATEWAY_URL; none when unset)")
    o.add_argument("--pushgateway-job", default="kingmaker-drift", help="Pushgateway job label")
    o.add_argument("--pushgateway-label", type=_label, action="append", default=[], metavar="NAME=VALUE",
                   help="add a label to the pushed group (repeatable), e.g. championchallenger=fraud-detector and "
                        "namespace=fraud so dashboards and alerts can select the run")


def _opt(args: argparse.Namespace, name: str) -> Any:
    return getattr(args, name, None)


def settings_from_args(args: argparse.Namespace) -> object:
    from drift_service.analysis import Policy
    from drift_service.job import JobSettings
    from drift_service.stats import Correction
    from drift_service.window import parse_duration
    from kingmaker.errors import PermanentError
    from kingmaker.settings import default_home

    env = DriftSettings.from_env()
    window = _opt(args, "window")
    if window is None and _opt(args, "rows") is None:
        try:
            window = parse_duration(env.window)
        except ValueError as exc:
            raise PermanentError(f"$KINGMAKER_DRIFT_WINDOW: {exc}") from exc
    try:
        policy = Policy(psi_moderate=args.psi_moderate, psi_severe=args.psi_severe, alpha=args.alpha,
                        correction=Correction(args.correction), min_rows=args.min_rows, epsilon=args.epsilon)
    except ValueError as exc:
        raise PermanentError(f"bad drift thresholds: {exc}") from exc
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return JobSettings(
        predictions_url=_opt(args, "predictions_url") or LogSettings.from_env().predictions_url,
        output_dir=_opt(args, "output_dir") or env.run_dir(default_home(), stamp),
        mlflow=MlflowSettings.from_env(tracking_uri=_opt(args, "tracking_uri"), model_name=_opt(args, "model_name")),
        window=window, rows=_opt(args, "rows"), until=_opt(args, "until"), reference_dir=_opt(args, "reference_dir"),
        champion_alias=args.champion_alias, challenger_alias=args.challenger_alias,
        log_to_mlflow=not args.no_mlflow_log,
        experiment=_opt(args, "experiment") or env.experiment,
        pushgateway_url=_opt(args, "pushgateway") or env.pushgateway_url,
        pushgateway_job=args.pushgateway_job,
        pushgateway_labels=tuple(_opt(args, "pushgateway_label") or ()),
        categorical=tuple(c.strip() for c in (_opt(args, "categorical") or "").split(",") if c.strip()),
        policy=policy,
    )


def run(args: argparse.Namespace) -> int:
    from drift_service import job

    settings = settings_from_args(args)
    assert isinstance(settings, job.JobSettings)
    outcome = job.run(settings)
    print(job.summary(outcome))
    return 0
