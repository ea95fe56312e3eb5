"""`kingmaker train`: train candidates on a data set and register the chosen one in MLflow."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from kingmaker.settings import MlflowSettings, environment_help

if TYPE_CHECKING:
    from training.data import Dataset
    from training.pipeline import TrainConfig

DATA_HELP = ("'creditcard' (the real Kaggle set, 284,807 transactions), 'synthetic' (generated, with "
             "customer/merchant keys and a controllable fraud rate), or a CSV/Parquet file path")


def add_data_arguments(p: argparse.ArgumentParser, default: str = "creditcard") -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", default=default, help=DATA_HELP)
    g.add_argument("--rows", type=int, help="use a stratified sample of this many rows (synthetic: generate this many)")
    g.add_argument("--label", default="Class", help="label column of a file (0/1)")
    g.add_argument("--time-column", help="time column of a file (for --split time)")
    g.add_argument("--amount-column", help="amount column of a file (missed-fraud cost)")
    g.add_argument("--fraud-rate", type=float, default=0.02, help="synthetic: expected fraud rate")
    g.add_argument("--seed", type=int, default=0, help="seed for sampling, splits, models and synthetic data")


def load_data(args: argparse.Namespace) -> Dataset:
    from training import data

    if args.data == "creditcard":
        return data.load_creditcard(rows=args.rows, seed=args.seed)
    if args.data == "synthetic":
        return data.synthetic(rows=args.rows or 20_000, fraud_rate=args.fraud_rate, seed=args.seed)
    return data.load_file(Path(args.data), label=args.label, time_column=args.time_column,
                          amount_column=args.amount_column)


def _alert_rate(text: str) -> str | float:
    if text in ("oof", "derived"):
        return text
    try:
        rate = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be oof, derived or a share in (0, 0.5], got {text!r}") from None
    if not 0.0 < rate <= 0.5:
        raise argparse.ArgumentTypeError(f"must be a share in (0, 0.5], got {text!r}")
    return rate


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = environment_help(MlflowSettings)
    add_data_arguments(p)
    add_arguments_training(p)


def add_arguments_training(p: argparse.ArgumentParser) -> None:
    """The training and MLflow options (`kingmaker train` and `kingmaker retrain`)."""
    g = p.add_argument_group("training")
    g.add_argument("--candidates", default="xgboost,logreg,forest", help="comma-separated: xgboost, logreg, forest")
    g.add_argument("--folds", type=int, default=5, help="stratified K-fold CV on the training part")
    g.add_argument("--test-size", type=float, default=0.2, help="held-out fraction, never used for choices")
    g.add_argument("--split", choices=["stratified", "time"], default="stratified",
                   help="hold out a stratified random part, or the latest part by time")
    g.add_argument("--select-by", choices=["pr_auc", "roc_auc", "best_f1", "cost"], default="pr_auc",
                   help="mean CV metric that chooses the candidate; cost: the deployment objective's cost per 1,000 "
                        "transactions at the alert rate the candidate would be deployed with (lowest wins)")
    g.add_argument("--threshold-objective", choices=["alert-rate", "cost", "f1"], default="alert-rate",
                   help="operating point: an alert rate (a quantile of the deployed model's scores on calibration "
                        "rows), or the threshold of minimum expected cost or best F1 on out-of-fold scores")
    g.add_argument("--alert-rate", default="oof", type=_alert_rate, metavar="oof|derived|RATE",
                   help="oof: chosen on out-of-fold scores around the derived rate; derived: 2x the training "
                        "labels' fraud rate, one significant digit; or a share in (0, 0.5]")
    g.add_argument("--calibration-size", type=float, default=0.2,
                   help="share of the training part held back from the deployed model to set its threshold")
    g.add_argument("--review-cost", type=float, default=5.0, help="cost of reviewing one alert")
    g.add_argument("--missed-fraud-cost", type=float, default=100.0,
                   help="cost of a missed fraud (unless --amount-cap prices misses by their amount)")
    g.add_argument("--amount-cap", type=float,
                   help="a missed fraud costs its amount (the data's amount column) clipped here")
    g.add_argument("--tune", type=int, default=0, metavar="N",
                   help="try N XGBoost settings from the search space (each a nested MLflow run)")
    g.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for test-metric 95%% CIs")
    g.add_argument("--n-jobs", type=int, default=2, help="threads per model fit")
    g.add_argument("--no-register", action="store_true", help="log the run but register no model version")
    m = p.add_argument_group("MLflow")
    m.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else SQLite in $KINGMAKER_HOME)")
    m.add_argument("--experiment", help="experiment name (default kingmaker-fraud)")
    m.add_argument("--model-name", help="registered model name (default fraud-detector)")


def training_config(args: argparse.Namespace, *, register: bool | None = None, split: str | None = None,
                    ) -> TrainConfig:
    """The `TrainConfig` the training options say (``register`` / ``split`` override theirs)."""
    from kingmaker.objective import Objective
    from training.pipeline import TrainConfig

    return TrainConfig(
        candidates=tuple(c.strip() for c in args.candidates.split(",") if c.strip()), folds=args.folds,
        test_size=args.test_size, split=split or args.split, select_by=args.select_by,
        threshold_objective=args.threshold_objective, choose_rate=args.alert_rate == "oof",
        calibration_size=args.calibration_size,
        objective=Objective(review_cost=args.review_cost, missed_fraud_cost=args.missed_fraud_cost,
                            amount_feature=(args.amount_column or "Amount") if args.amount_cap else None,
                            amount_cap=args.amount_cap,
                            alert_rate=args.alert_rate if isinstance(args.alert_rate, float) else None),
        tune=args.tune, n_bootstrap=args.bootstrap, seed=args.seed, n_jobs=args.n_jobs,
        register=(not args.no_register) if register is None else register)


def run(args: argparse.Namespace) -> int:
    from training.pipeline import train

    settings = MlflowSettings.from_env(tracking_uri=args.tracking_uri, experiment=args.experiment,
                                       model_name=args.model_name)
    cfg = training_config(args)
    ds = load_data(args)
    result = train(ds, cfg, settings)
    print()
    print(result.table.to_string(index=False))
    m = result.test_metrics
    print(f"\nchosen: {result.chosen}  test PR-AUC {m['pr_auc']:.4f} [{m.get('pr_auc_ci_low', float('nan')):.4f}, "
          f"{m.get('pr_auc_ci_high', float('nan')):.4f}]  ROC-AUC {m['roc_auc']:.4f}  F1 {m['f1']:.4f}  "
          f"cost/1k {m['expected_cost_per_1k']:.2f}  alert rate {m['alert_rate']:.4%}"
          + (f" (target {m['target_alert_rate']:.4%})" if "target_alert_rate" in m else ""))
    if "vs_champion_cost_diff_per_1k" in m:
        print(f"vs champion version {m['champion_version']:.0f}: test cost/1k {m['expected_cost_per_1k']:.2f} vs "
              f"{m['champion_expected_cost_per_1k']:.2f}, paired difference {m['vs_champion_cost_diff_per_1k']:+.2f} "
              f"[{m.get('vs_champion_cost_diff_per_1k_ci_low', float('nan')):+.2f}, "
              f"{m.get('vs_champion_cost_diff_per_1k_ci_high', float('nan')):+.2f}] (95% paired bootstrap CI)")
    if result.version:
        print(f"registered: models:/{result.model_name}@{result.alias} -> version {result.version}  (run {result.run_id})")
    else:
        print(f"not registered (--no-register); run {result.run_id}")
    return 0
