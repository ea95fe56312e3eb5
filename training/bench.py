"""`kingmaker bench quality`: model quality on the real data set, and how long training takes.

1. Stratified 5-fold CV over the whole data set for every candidate trial (mean ± sd of PR-AUC,
   ROC-AUC, best F1); with ``--tune N`` the first N XGBoost search-space points are tried, each a
   nested MLflow run under one benchmark run.
2. A time-ordered 80/20 split: fit on the earliest 80% of transactions, score the latest 20%.
3. Wall time of `kingmaker train` on the full data (all candidates: CV on the training part,
   refits, evaluation, logging and registration), unless ``--skip-train-timing``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    from training.cli import add_data_arguments

    add_data_arguments(p)
    p.add_argument("--candidates", default="xgboost,logreg,forest", help="comma-separated candidates")
    p.add_argument("--tune", type=int, default=0, metavar="N", help="XGBoost search-space points to try")
    p.add_argument("--folds", type=int, default=5, help="CV folds over the whole data set")
    p.add_argument("--n-jobs", type=int, default=2, help="threads per model fit")
    p.add_argument("--skip-train-timing", action="store_true", help="do not time a full `kingmaker train`")
    p.add_argument("--out", default="bench-results/quality.json", help="where to write the numbers")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm.auto import tqdm

    from kingmaker.settings import MlflowSettings
    from training import metrics, pipeline, registry
    from training.cli import load_data

    ds = load_data(args)
    cfg = pipeline.TrainConfig(candidates=tuple(args.candidates.split(",")), folds=args.folds, tune=args.tune,
                               seed=args.seed, n_jobs=args.n_jobs)
    settings = MlflowSettings.from_env(experiment="kingmaker-bench-quality")
    tracker = registry.Tracker(settings)
    run_ = tracker.client.create_run(tracker.experiment_id, run_name=f"bench-quality-{ds.name}")
    parent = registry.ParentRun(tracker, run_.info.run_id)
    amounts = ds.frame[ds.amount_column].to_numpy(float) if ds.amount_column else None
    print(f"data: {ds.name}, {len(ds.frame)} rows, {ds.n_positive} frauds; {os.cpu_count()} CPU(s); MLflow run {parent.run_id}")

    trials = pipeline.trials(cfg)
    cv_rows: list[dict[str, Any]] = []
    with tqdm(total=len(trials) * cfg.folds, desc=f"{cfg.folds}-fold CV on all rows", unit="fit") as bar:
        for candidate, params in trials:
            res = pipeline.cross_validate(candidate, params, ds.x, ds.y, amounts, cfg, bar)
            parent.log_candidate(res)
            cv_rows.append({"candidate": candidate.name, "params": params, **res.cv, "seconds": res.fit_seconds})

    time_rows: list[dict[str, Any]] = []
    train_idx, test_idx = pipeline.split(ds, pipeline.TrainConfig(split="time", test_size=0.2))
    tr, te = ds.subset(train_idx), ds.subset(test_idx)
    best: dict[str, dict[str, Any]] = {}
    for row in cv_rows:
        if row["candidate"] not in best or row["cv_pr_auc_mean"] > best[row["candidate"]]["cv_pr_auc_mean"]:
            best[row["candidate"]] = row
    imbalance = float((tr.y == 0).sum() / max(1, tr.n_positive))
    for name, row in tqdm(best.items(), desc="time-ordered 80/20", unit="model"):
        model = pipeline.cand.CANDIDATES[name].build(imbalance, seed=args.seed, n_jobs=args.n_jobs, params=row["params"])
        model.fit(tr.x, tr.y)
        s = model.predict_proba(te.x)[:, 1]
        time_rows.append({"candidate": name, "pr_auc": metrics.pr_auc(te.y, s), "roc_auc": metrics.roc_auc(te.y, s),
                          "best_f1": metrics.best_f1(te.y, s)[0], "test_frauds": int(te.y.sum())})
    tracker.client.set_terminated(parent.run_id)

    train_seconds = None
    if not args.skip_train_timing:
        with tempfile.TemporaryDirectory() as home:
            started = time.perf_counter()
            pipeline.train(ds, pipeline.TrainConfig(candidates=cfg.candidates, seed=args.seed, n_jobs=args.n_jobs),
                           MlflowSettings.from_env(home=Path(home), tracking_uri=None))
            train_seconds = time.perf_counter() - started

    print(f"\n{cfg.folds}-fold stratified CV over all {len(ds.frame)} rows (mean ± sd):")
    print(f"{'candidate':<10} {'params':<44} {'PR-AUC':>16} {'ROC-AUC':>16} {'best F1':>16} {'s':>6}")
    for r in cv_rows:
        cells = [f"{r[f'cv_{k}_mean']:.4f} ± {r[f'cv_{k}_sd']:.4f}" for k in ("pr_auc", "roc_auc", "best_f1")]
        print(f"{r['candidate']:<10} {json.dumps(r['params'])[:44]:<44} {cells[0]:>16} {cells[1]:>16} {cells[2]:>16} {r['seconds']:>6.1f}")
    print("\ntime-ordered split (train on the earliest 80%, test on the latest 20%):")
    for r in time_rows:
        print(f"{r['candidate']:<10} PR-AUC {r['pr_auc']:.4f}  ROC-AUC {r['roc_auc']:.4f}  best F1 {r['best_f1']:.4f}"
              f"  ({r['test_frauds']} frauds in test)")
    if train_seconds is not None:
        print(f"\nkingmaker train on all rows ({', '.join(cfg.candidates)}): {train_seconds:.1f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "data": ds.name, "rows": len(ds.frame), "frauds": ds.n_positive, "cpus": os.cpu_count(),
        "machine": platform.platform(), "cv": cv_rows, "time_split": time_rows, "train_seconds": train_seconds,
        "best_cv": max(cv_rows, key=lambda r: float(r["cv_pr_auc_mean"])) if cv_rows else None,
    }, indent=1, default=lambda o: o.item() if isinstance(o, np.generic) else str(o)))
    print(f"wrote {out}")
    return 0
