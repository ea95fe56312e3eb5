"""Train candidates, choose one on cross-validation, evaluate it once on held-out data, register it.

The held-out test part is never used for a choice: the candidate is chosen by mean CV score on the
training part, and its threshold from its out-of-fold scores. The chosen candidate is then refit on
the whole training part, saved in its native MLflow flavor and scored on the test part by loading
the saved model back, so the logged test predictions are exactly what serving will compute.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold, train_test_split
from tqdm.auto import tqdm

from kingmaker import models, reference
from kingmaker.errors import PermanentError
from kingmaker.settings import MlflowSettings
from training import candidates as cand
from training import metrics, plots, registry
from training.candidates import CandidateResult
from training.data import Dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """How to train; every field maps to a `kingmaker train` flag."""

    candidates: tuple[str, ...] = ("xgboost", "logreg", "forest")
    folds: int = 5
    test_size: float = 0.2
    split: str = "stratified"  # or "time": the latest test_size of rows by time is held out
    select_by: str = "pr_auc"  # CV metric that picks the candidate
    threshold_objective: str = "cost"  # or "f1"
    costs: metrics.CostMatrix = field(default_factory=metrics.CostMatrix)
    tune: int = 0  # number of XGBoost search-space points to try (nested runs); 0 = defaults only
    n_bootstrap: int = 200
    reference_rows: int = 20_000
    seed: int = 0
    n_jobs: int = 2
    register: bool = True


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    chosen: str
    model_name: str
    version: str | None
    alias: str | None
    test_metrics: dict[str, float]
    table: pd.DataFrame


def split(ds: Dataset, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices)."""
    idx = np.arange(len(ds.frame))
    if cfg.split == "time":
        if ds.time_column is None:
            raise PermanentError(f"{ds.name} has no time column: use --split stratified")
        order = np.argsort(ds.frame[ds.time_column].to_numpy(), kind="stable")
        cut = round(len(order) * (1 - cfg.test_size))
        return np.sort(order[:cut]), np.sort(order[cut:])
    train, test = train_test_split(idx, test_size=cfg.test_size, stratify=ds.y, random_state=cfg.seed)
    return np.sort(train), np.sort(test)


def check_enough(y: np.ndarray, folds: int, what: str) -> None:
    n_pos = int(y.sum())
    if n_pos < folds or len(y) - n_pos < folds:
        raise PermanentError(f"{what} has {n_pos} fraud(s) in {len(y)} rows: need at least {folds} of each class for {folds}-fold CV")


def cross_validate(candidate: cand.Candidate, params: dict[str, Any], x: pd.DataFrame, y: np.ndarray,
                   amounts: np.ndarray | None, cfg: TrainConfig, bar: tqdm) -> CandidateResult:
    """Stratified K-fold: out-of-fold scores, per-fold metrics (mean, sd), threshold from OOF scores."""
    imbalance = float((y == 0).sum() / max(1, (y == 1).sum()))
    oof = np.zeros(len(y))
    per_fold: dict[str, list[float]] = {"pr_auc": [], "roc_auc": [], "best_f1": []}
    started = time.perf_counter()
    for train_idx, val_idx in StratifiedKFold(cfg.folds, shuffle=True, random_state=cfg.seed).split(x, y):
        model = candidate.build(imbalance, seed=cfg.seed, n_jobs=cfg.n_jobs, params=params)
        model.fit(x.iloc[train_idx], y[train_idx])
        oof[val_idx] = model.predict_proba(x.iloc[val_idx])[:, 1]
        per_fold["pr_auc"].append(metrics.pr_auc(y[val_idx], oof[val_idx]))
        per_fold["roc_auc"].append(metrics.roc_auc(y[val_idx], oof[val_idx]))
        per_fold["best_f1"].append(metrics.best_f1(y[val_idx], oof[val_idx])[0])
        bar.update(1)
    cv = {}
    for k, v in per_fold.items():
        cv[f"cv_{k}_mean"], cv[f"cv_{k}_sd"] = float(np.mean(v)), float(np.std(v, ddof=1))
    threshold = choose_threshold(y, oof, amounts, cfg)
    return CandidateResult(candidate.name, {**candidate.defaults, **params}, cv, threshold, oof,
                           time.perf_counter() - started)


def choose_threshold(y: np.ndarray, score: np.ndarray, amounts: np.ndarray | None, cfg: TrainConfig) -> float:
    if cfg.threshold_objective == "f1":
        return metrics.best_f1(y, score)[1]
    return metrics.min_cost_threshold(y, score, cfg.costs, amounts)[1]


def train(ds: Dataset, cfg: TrainConfig, settings: MlflowSettings) -> TrainResult:
    """The whole `kingmaker train`: CV, choice, refit, evaluation, logging, registration."""
    train_idx, test_idx = split(ds, cfg)
    tr, te = ds.subset(train_idx), ds.subset(test_idx)
    check_enough(tr.y, cfg.folds, "the training part")
    check_enough(te.y, 1, "the test part")
    amounts_tr = tr.frame[tr.amount_column].to_numpy(float) if tr.amount_column else None
    amounts_te = te.frame[te.amount_column].to_numpy(float) if te.amount_column else None
    tracker = registry.Tracker(settings)  # fails fast if the store is unreachable
    log.info("data %s: %d rows (%d frauds), %d features; train %d / test %d (%s split)", ds.name, len(ds.frame),
             ds.n_positive, len(ds.features), len(tr.frame), len(te.frame), cfg.split)

    planned = trials(cfg)
    with tracker.parent_run(ds, config_params(cfg), tr, te) as parent:
        results: list[CandidateResult] = []
        with tqdm(total=len(planned) * cfg.folds, desc="cross-validating", unit="fit") as bar:
            for candidate, params in planned:
                bar.set_postfix_str(candidate.name)
                res = cross_validate(candidate, params, tr.x, tr.y, amounts_tr, cfg, bar)
                parent.log_candidate(res)
                results.append(res)
        best_by_name: dict[str, CandidateResult] = {}
        for res in results:  # the best trial of each candidate represents it
            key = f"cv_{cfg.select_by}_mean"
            if res.name not in best_by_name or res.cv[key] > best_by_name[res.name].cv[key]:
                best_by_name[res.name] = res
        chosen = max(best_by_name.values(), key=lambda r: r.cv[f"cv_{cfg.select_by}_mean"])
        log.info("chosen: %s (CV %s %.4f); threshold %.4f from out-of-fold scores (%s objective)", chosen.name,
                 cfg.select_by, chosen.cv[f"cv_{cfg.select_by}_mean"], chosen.threshold, cfg.threshold_objective)

        imbalance = float((tr.y == 0).sum() / max(1, tr.n_positive))
        curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        fitted: dict[str, Any] = {}
        for res in tqdm(best_by_name.values(), desc="refitting on the training part", unit="model"):
            model = cand.CANDIDATES[res.name].build(imbalance, seed=cfg.seed, n_jobs=cfg.n_jobs, params=res.params)
            model.fit(tr.x, tr.y)
            fitted[res.name] = model
            score = model.predict_proba(te.x)[:, 1]
            res.test = metrics.report(te.y, score, res.threshold, cfg.costs, amounts_te)
            curves[res.name] = (te.y, score)

        workdir = Path(tempfile.mkdtemp(prefix="kingmaker-train-"))
        model_dir = models.save(
            fitted[chosen.name], workdir / "model", flavor=cand.CANDIDATES[chosen.name].flavor,
            signature=models.signature(tr.x), input_example=tr.x.head(3), threshold=chosen.threshold,
            features=list(ds.features), extra={"candidate": chosen.name})
        saved = models.load_local(model_dir, models.ModelRef(settings.model_name, "", parent.run_id, ""))
        test_score = saved.predict_proba(te.x)
        test_metrics = metrics.report_with_ci(te.y, test_score, chosen.threshold, cfg.costs, amounts_te,
                                              n_boot=cfg.n_bootstrap, seed=cfg.seed)
        train_score = saved.predict_proba(tr.x)
        ref_idx = np.random.default_rng(cfg.seed).permutation(len(tr.frame))[: cfg.reference_rows]
        ref = reference.build(tr.x.iloc[ref_idx], train_score[ref_idx], list(ds.features))

        plot_dir = workdir / "plots"
        plot_dir.mkdir()
        plots.pr_curve(curves, plot_dir / "pr_curve.png")
        plots.roc(curves, plot_dir / "roc.png")
        plots.calibration(curves, plot_dir / "calibration.png")
        plots.feature_importance(cand.feature_importance(fitted[chosen.name], list(ds.features)),
                                 plot_dir / "feature_importance.png", f"Feature importance ({chosen.name})")
        predictions = pd.DataFrame({"row": test_idx, ds.label: te.y, "score": test_score})
        if ds.id_column:
            predictions.insert(0, ds.id_column, te.frame[ds.id_column].to_numpy())
        parent.log_outputs(model_dir, plot_dir, ref, predictions, te.x, chosen, test_metrics,
                           list(best_by_name.values()))
        version, alias = (parent.register(chosen, test_metrics) if cfg.register else (None, None))

    table = summary_table(list(best_by_name.values()), chosen.name, cfg.select_by)
    return TrainResult(parent.run_id, chosen.name, settings.model_name, version, alias, test_metrics, table)


def trials(cfg: TrainConfig) -> list[tuple[cand.Candidate, dict[str, Any]]]:
    planned: list[tuple[cand.Candidate, dict[str, Any]]] = []
    for c in cand.get(list(cfg.candidates)):
        space = c.search_space[: max(1, cfg.tune)] if (cfg.tune and c.search_space) else ({},)
        planned.extend((c, dict(p)) for p in space)
    return planned


def summary_table(results: list[CandidateResult], chosen: str, select_by: str) -> pd.DataFrame:
    rows = []
    for r in results:
        rows.append({
            "candidate": r.name + (" *" if r.name == chosen else ""),
            f"cv {select_by}": f"{r.cv[f'cv_{select_by}_mean']:.4f} ± {r.cv[f'cv_{select_by}_sd']:.4f}",
            "test pr_auc": round(r.test.get("pr_auc", float("nan")), 4),
            "test roc_auc": round(r.test.get("roc_auc", float("nan")), 4),
            "test f1": round(r.test.get("f1", float("nan")), 4),
            "cost/1k": round(r.test.get("expected_cost_per_1k", float("nan")), 2),
            "threshold": round(r.threshold, 4),
            "cv seconds": round(r.fit_seconds, 1),
        })
    return pd.DataFrame(rows)


def config_params(cfg: TrainConfig) -> dict[str, str]:
    flat = asdict(cfg)
    costs = flat.pop("costs")
    flat.update({f"cost_{k}": v for k, v in costs.items()})
    return {k: ",".join(v) if isinstance(v, tuple | list) else str(v) for k, v in flat.items()}
