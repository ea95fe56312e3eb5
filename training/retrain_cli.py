"""`kingmaker retrain`: train a challenger on the traffic kingmaker served; register it only if it passes the gate.

1. Unless ``--replace``, a challenger already under evaluation (``@challenger`` set) stops here: exit 0, one line.
2. The training set (`training.retrain.served_set`) from the prediction and label logs (local or ``s3://``),
   labels matured with ``--label-delay`` (give it the controller's ``labelDelaySeconds``), optionally mixed with
   original data (``--data``, as for `kingmaker train`: those rows are placed before the served traffic, so they
   train and never judge).
3. The most recent ``--holdout`` share is the gate window; `training.pipeline.train` trains the candidates on
   the rest (time-ordered split inside too) and logs the run, without registering.
4. The candidate and the current ``@champion`` are scored on the gate window; `training.retrain.gate` decides.
5. Pass: the run's model is registered as ``@challenger`` (replacing any) with the lineage as version tags.
   Fail: the run records why (tag ``kingmaker.retrain.outcome``); exit 0 with the one-line reason.

Lineage on the run (params/tags ``kingmaker.retrain.*``) and the version: data windows, row and fraud counts, the
``mlflow.data`` digest of the training set and of the gate window, the champion version compared.
"""

from __future__ import annotations

import argparse
import time
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd

from kingmaker import logs, mlflow_errors, models
from kingmaker.errors import PermanentError
from kingmaker.roles import Arm
from kingmaker.settings import LogSettings, MlflowSettings, environment_help
from training import retrain
from training.cli import add_data_arguments, load_data

PREFIX = "kingmaker.retrain."


def _duration(text: str) -> timedelta:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        value, unit = float(text[:-1]), units[text[-1]]
    except (KeyError, ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 3600s, 90m, 6h or 7d") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return timedelta(seconds=value * unit)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from training import cli as train_cli

    p.epilog = environment_help(MlflowSettings, LogSettings)
    g = p.add_argument_group("served traffic")
    g.add_argument("--predictions-url", help="prediction log (default $KINGMAKER_PREDICTIONS_URL)")
    g.add_argument("--labels-url", help="label log (default $KINGMAKER_LABELS_URL)")
    g.add_argument("--label-delay", type=_duration, default=timedelta(days=7),
                   help="a transaction counts once this old, with its label known by then: the controller's "
                        "labelDelaySeconds (default 7d)")
    g.add_argument("--holdout", type=float, default=0.2,
                   help="share of the most recent matured transactions kept for the gate (never trained on)")
    g.add_argument("--margin", type=float, default=0.0,
                   help="the candidate may cost at most this much more per 1,000 transactions than the champion "
                        "(upper end of the 95%% CI)")
    g.add_argument("--replace", action="store_true", help="retrain even while a challenger is under evaluation")
    add_data_arguments(p, default="")  # --data: original data mixed into the training part (default: none)
    train_cli.add_arguments_training(p)


def _frame_of(ds: Any, features: list[str]) -> pd.DataFrame:
    missing = [f for f in features if f not in ds.frame.columns]
    if missing:
        raise PermanentError(f"--data {ds.name}: no column for feature(s) {', '.join(missing)} of the champion")
    return ds.frame[[*features, ds.label]].rename(columns={ds.label: retrain.LABEL})


def _datasets(client: Any, run_id: str, source: str, parts: dict[str, pd.DataFrame]) -> dict[str, str]:
    """Log each frame as an ``mlflow.data`` input of the run (context = its key); returns their digests."""
    import warnings

    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.entities import DatasetInput, InputTag

    inputs, digests = [], {}
    for context, frame in parts.items():
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
            dataset = from_pandas(frame, source=source, targets=retrain.LABEL, name=f"served-{context}")
        digests[context] = str(dataset.digest)
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)]))
    with mlflow_errors.translated(f"logging the data sets of run {run_id}"):
        client.log_inputs(run_id, datasets=inputs)
    return digests


def run(args: argparse.Namespace) -> int:
    from mlflow.entities import Metric, RunTag

    from training.cli import training_config
    from training.data import Dataset
    from training.pipeline import train

    mlflow_errors.bound_http_retries()
    settings = MlflowSettings.from_env(tracking_uri=args.tracking_uri, experiment=args.experiment,
                                       model_name=args.model_name)
    log_settings = LogSettings.from_env()
    predictions_url = args.predictions_url or log_settings.predictions_url
    labels_url = args.labels_url or log_settings.labels_url
    mlflow_errors.check_reachable(settings.tracking_uri)
    client = settings.client()
    name = settings.model_name
    with mlflow_errors.translated(f"reading the aliases of {name}"):
        aliases = {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}
    if Arm.CHAMPION.value not in aliases:
        raise PermanentError(f"{name} has no @champion to compare with: train one first (kingmaker train)")
    if Arm.CHALLENGER.value in aliases and not args.replace:
        print(f"not retraining: challenger v{aliases[Arm.CHALLENGER.value]} of {name} is under evaluation "
              "(--replace retrains anyway)")
        return 0
    champion = models.load_uri(client, f"models:/{name}@{Arm.CHAMPION.value}")
    features = list(champion.features)

    now = time.time()
    served = retrain.served_set(logs.read_predictions(predictions_url), logs.read_labels(labels_url), features,
                                now=now, label_delay_seconds=args.label_delay.total_seconds())
    if served.frauds < 10:
        raise PermanentError(f"only {served.frauds} matured frauds in {len(served.frame)} matured transactions of "
                             f"{predictions_url} (label delay {args.label_delay}): too few to train on")
    part, window = retrain.split_window(served.frame, args.holdout)
    train_frame = part[[*features, retrain.LABEL]].assign(ts=part[retrain.TIME])
    mixed = 0
    if args.data:
        original = _frame_of(load_data(args), features)
        mixed = len(original)
        # before every served row: a time-ordered split puts them in training, never in a test part
        first = part[retrain.TIME].min() - pd.Timedelta(seconds=1)
        train_frame = pd.concat([original.assign(ts=first), train_frame], ignore_index=True)
    ds = Dataset("served", train_frame.reset_index(drop=True), tuple(features), retrain.LABEL, predictions_url,
                 time_column="ts")
    cfg = training_config(args, register=False, split="time")
    result = train(ds, cfg, settings)

    candidate = models.load(client, models.ModelRef(name, "", result.run_id, f"runs:/{result.run_id}/model"))
    y = window[retrain.LABEL].to_numpy(np.int8)
    x = window[features]
    verdict = retrain.gate(
        y, retrain.decision_costs(y, champion.predict_proba(x), champion.threshold, cfg.objective),
        retrain.decision_costs(y, candidate.predict_proba(x), candidate.threshold, cfg.objective),
        margin=args.margin, n_boot=max(200, cfg.n_bootstrap), seed=cfg.seed)
    lineage = {
        "training_window_start": str(part[retrain.TIME].min()), "training_window_end": str(part[retrain.TIME].max()),
        "gate_window_start": str(window[retrain.TIME].min()), "gate_window_end": str(window[retrain.TIME].max()),
        "training_rows": str(len(part)), "training_frauds": str(int(part[retrain.LABEL].sum())),
        "mixed_original_rows": str(mixed), "gate_rows": str(verdict.rows), "gate_frauds": str(verdict.frauds),
        "logged_rows": str(served.logged_rows), "transactions": str(served.transactions),
        "unmatured_transactions": str(served.unmatured), "label_delay_seconds": f"{args.label_delay.total_seconds():g}",
        "predictions_url": predictions_url, "labels_url": labels_url,
        **{f"{context}_digest": digest for context, digest in _datasets(client, result.run_id, predictions_url, {
            "retrain": train_frame.drop(columns="ts"), "gate": window[[*features, retrain.LABEL]]}).items()},
        "champion_version": champion.ref.version, "candidate": result.chosen,
        "champion_cost_per_1k": f"{verdict.champion_cost:.4f}", "candidate_cost_per_1k": f"{verdict.candidate_cost:.4f}",
        "difference_per_1k": f"{verdict.difference:.4f}",
        "difference_ci": f"[{verdict.ci_low:.4f}, {verdict.ci_high:.4f}]", "margin_per_1k": f"{args.margin:g}",
        "outcome": "registered" if verdict.passed else "rejected",
    }
    tags = {PREFIX + k: v for k, v in lineage.items()}
    with mlflow_errors.translated(f"recording the gate on run {result.run_id}"):
        client.log_batch(result.run_id, metrics=[Metric("gate_difference_per_1k", verdict.difference,
                                                        int(time.time() * 1000), 0)],
                         tags=[RunTag(k, v) for k, v in {**tags, PREFIX + "reason": verdict.reason}.items()])
    if not verdict.passed:
        print(f"not registered: {verdict.reason} (run {result.run_id})")
        return 0
    with mlflow_errors.translated(f"registering run {result.run_id} as @{Arm.CHALLENGER.value}"):
        version, alias = models.register(client, name, result.run_id, alias=Arm.CHALLENGER.value, tags=tags)
    print(f"registered: models:/{name}@{alias} -> version {version}: {verdict.reason} (run {result.run_id})")
    return 0

