"""Train candidates, choose one on cross-validation, evaluate it once on held-out data, register it.

The held-out test part is never used for a choice: the candidate is chosen by mean CV score on the
training part, and its operating point from its out-of-fold scores. The operating point is an alert rate
(`training.operating.choose_alert_rate`, around the deployment objective's rate, `kingmaker.objective`); the
deployed model is fitted on the training part less a calibration part (the latest rows with ``--split time``,
else a stratified sample) and its threshold is that quantile of its scores on the calibration part, rows it
was not fitted on, so the rate carries over to new traffic. (``--threshold-objective cost|f1`` keep a threshold
chosen on the out-of-fold scores and refit on the whole training part.) The chosen model is saved in its native
MLflow flavor and scored on the test part by loading the saved model back, so the logged test predictions are
exactly what serving will compute; its test cost is compared with the current champion's on the same rows.
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
from kingmaker.objective import Objective
from kingmaker.settings import MlflowSettings
from training import candidates as cand
from training import metrics, operating, plots, registry
from training.candidates import CandidateResult
from training.data import Dataset, time_cut

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """How to train; every field maps to a `kingmaker train` flag."""

    candidates: tuple[str, ...] = ("xgboost", "logreg", "forest")
    folds: int = 5
    test_size: float = 0.2
    split: str = "stratified"  # or "time": the latest test_size of rows by time is held out
    select_by: str = "pr_auc"  # CV metric that picks the candidate ("cost": the objective's, at the deployed rate)
    threshold_objective: str = "alert-rate"  # or "cost" (minimum expected cost on OOF scores) or "f1"
    objective: Objective = field(default_factory=Objective)  # alert rate None: derived from the training labels
    choose_rate: bool = True  # choose the alert rate on OOF scores around the objective's; False: use it as is
    calibration_size: float = 0.2  # share of the training part the deployed model's threshold is taken on
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
        train, test = time_cut(ds, cfg.test_size, "use --split stratified")
        return np.sort(train), np.sort(test)
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
    fold_of = np.zeros(len(y), dtype=int)
    per_fold: dict[str, list[float]] = {"pr_auc": [], "roc_auc": [], "best_f1": []}
    started = time.perf_counter()
    for k, (train_idx, val_idx) in enumerate(StratifiedKFold(cfg.folds, shuffle=True,
                                                              random_state=cfg.seed).split(x, y)):
        fold_of[val_idx] = k
        model = candidate.build(imbalance, seed=cfg.seed, n_jobs=cfg.n_jobs, params=params)
        model.fit(x.iloc[train_idx], y[train_idx])
        oof[val_idx] = model.predict_proba(x.iloc[val_idx])[:, 1]
        per_fold["pr_auc"].append(metrics.pr_auc(y[val_idx], oof[val_idx]))
        per_fold["roc_auc"].append(metrics.roc_auc(y[val_idx], oof[val_idx]))
        per_fold["best_f1"].append(metrics.best_f1(y[val_idx], oof[val_idx])[0])
        bar.update(1)
    rate = None
    objective = cfg.objective.for_labels(y)
    if cfg.threshold_objective == "alert-rate":
        rate = (operating.choose_alert_rate(y, oof, fold_of, objective, amounts)[0] if cfg.choose_rate
                else float(objective.alert_rate or 0.0))
        threshold = operating.quantile_threshold(oof, rate)  # indicative: the deployed model's is set after its fit
    elif cfg.threshold_objective == "f1":
        threshold = metrics.best_f1(y, oof)[1]
    else:
        threshold = metrics.min_cost_threshold(y, oof, cfg.objective, amounts)[1]
    # the deployment's objective: each fold's cost per 1,000 at the alert rate deployed (its own top share); the
    # cost and F1 threshold objectives choose no rate, so their candidates are compared at the objective's
    deployed = rate if rate is not None else float(objective.alert_rate or 0.0)
    per_fold["cost"] = [operating.cost_at_rate(y[f], oof[f], deployed, objective, None if amounts is None else amounts[f])
                        for f in (fold_of == k for k in range(cfg.folds))]
    cv = {}
    for name, v in per_fold.items():
        cv[f"cv_{name}_mean"], cv[f"cv_{name}_sd"] = float(np.mean(v)), float(np.std(v, ddof=1))
    return CandidateResult(candidate.name, {**candidate.defaults, **params}, cv, threshold, oof,
                           time.perf_counter() - started, alert_rate=rate)


def merit(res: CandidateResult, select_by: str) -> float:
    """How good a candidate is by its mean CV ``select_by``, higher is better (``cost``: lower cost is better)."""
    value = res.cv[f"cv_{select_by}_mean"]
    return -value if select_by == "cost" else value


def calibration_split(tr: Dataset, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """(rows the deployed model is fitted on, rows its threshold is taken on), positions in the training part.
    Without an alert rate every row is fitted on."""
    idx = np.arange(len(tr.frame))
    if cfg.threshold_objective != "alert-rate" or cfg.calibration_size <= 0:
        return idx, idx[:0]
    if cfg.split == "time" and tr.time_column is not None:
        order = np.argsort(tr.frame[tr.time_column].to_numpy(), kind="stable")
        cut = round(len(order) * (1 - cfg.calibration_size))
        return np.sort(order[:cut]), np.sort(order[cut:])
    fit, cal = train_test_split(idx, test_size=cfg.calibration_size, stratify=tr.y, random_state=cfg.seed)
    return np.sort(fit), np.sort(cal)


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
            if res.name not in best_by_name or merit(res, cfg.select_by) > merit(best_by_name[res.name], cfg.select_by):
                best_by_name[res.name] = res
        chosen = max(best_by_name.values(), key=lambda r: merit(r, cfg.select_by))
        log.info("chosen: %s (CV %s %.4f); threshold %.4f from out-of-fold scores (%s objective)", chosen.name,
                 cfg.select_by, chosen.cv[f"cv_{cfg.select_by}_mean"], chosen.threshold, cfg.threshold_objective)

        fit_idx, cal_idx = calibration_split(tr, cfg)
        x_fit, y_fit = tr.x.iloc[fit_idx], tr.y[fit_idx]
        imbalance = float((y_fit == 0).sum() / max(1, int(y_fit.sum())))
        curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        fitted: dict[str, Any] = {}
        cal_scores: dict[str, np.ndarray] = {}  # each refit model's scores on the calibration rows
        for res in tqdm(best_by_name.values(), desc="refitting on the training part", unit="model"):
            model = cand.CANDIDATES[res.name].build(imbalance, seed=cfg.seed, n_jobs=cfg.n_jobs, params=res.params)
            model.fit(x_fit, y_fit)
            fitted[res.name] = model
            if res.alert_rate is not None:  # the rate as a quantile of this model's scores on rows it has not seen
                cal_scores[res.name] = model.predict_proba(tr.x.iloc[cal_idx])[:, 1]
                res.threshold = operating.quantile_threshold(cal_scores[res.name], res.alert_rate)
            score = model.predict_proba(te.x)[:, 1]
            res.test = metrics.report(te.y, score, res.threshold, cfg.objective, amounts_te)
            curves[res.name] = (te.y, score)
        if chosen.alert_rate is not None:
            log.info("operating point: alert rate %.4g (objective %.4g) -> threshold %.4g on %d calibration rows",
                     chosen.alert_rate, cfg.objective.for_labels(tr.y).alert_rate, chosen.threshold, len(cal_idx))

        workdir = Path(tempfile.mkdtemp(prefix="kingmaker-train-"))
        model_dir = models.save(
            fitted[chosen.name], workdir / "model", flavor=cand.CANDIDATES[chosen.name].flavor,
            signature=models.signature(tr.x), input_example=tr.x.head(3), threshold=chosen.threshold,
            features=list(ds.features), extra={"candidate": chosen.name, "alert_rate": chosen.alert_rate})
        saved = models.load_local(model_dir, models.ModelRef(settings.model_name, "", parent.run_id, ""))
        test_score = saved.predict_proba(te.x)
        test_metrics = metrics.report_with_ci(te.y, test_score, chosen.threshold, cfg.objective, amounts_te,
                                              n_boot=cfg.n_bootstrap, seed=cfg.seed)
        if chosen.alert_rate is not None:
            test_metrics["target_alert_rate"] = chosen.alert_rate
            test_metrics.update(calibrated_point(cal_scores[chosen.name], tr.y[cal_idx], test_score, te.y, cfg,
                                                 amounts_te, test_metrics))
        test_metrics.update(against_champion(tracker.champion(), te, saved.decide(test_score), cfg, amounts_te))
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


def calibrated_point(cal_scores: np.ndarray, cal_y: np.ndarray, test_score: np.ndarray, y: np.ndarray,
                     cfg: TrainConfig, amounts: np.ndarray | None, deployed: dict[str, float]) -> dict[str, float]:
    """The calibration alternative to the deployed quantile threshold, measured on the same test rows (MLflow
    metrics ``calibrated_alert_rate`` and ``calibrated_cost_per_1k``); nothing without calibration frauds."""
    if len(cal_y) == 0 or cal_y.sum() == 0:
        return {}
    alert = operating.calibrated_alerts(cal_scores, cal_y, test_score, cfg.objective, amounts)
    cost = float(1000.0 * cfg.objective.row_costs(y, alert, amounts).mean())
    log.info("operating point alternatives on the test part: alert-rate quantile %.3f%% flagged, %.2f per 1,000; "
             "isotonic calibration (flag when P x miss cost >= review cost) %.3f%% flagged, %.2f per 1,000",
             100 * deployed["alert_rate"], deployed["expected_cost_per_1k"], 100 * float(alert.mean()), cost)
    return {"calibrated_alert_rate": float(alert.mean()), "calibrated_cost_per_1k": cost}


def against_champion(champion: models.FraudModel | None, te: Dataset, alert: np.ndarray, cfg: TrainConfig,
                     amounts: np.ndarray | None) -> dict[str, float]:
    """The test cost of the new model's decisions minus the current champion's, on the same test rows, as MLflow
    metrics (``vs_champion_cost_diff_per_1k`` with its paired bootstrap CI; negative: the new model is cheaper).
    Nothing when there is no champion or it reads other features."""
    if champion is None:
        return {}
    if set(champion.features) - set(te.x.columns):
        log.warning("the champion (version %s) reads features this data lacks: no comparison", champion.ref.version)
        return {}
    champion_alert = champion.decide(champion.predict_proba(te.x[list(champion.features)]))
    diff = operating.paired_cost_difference(te.y, alert, champion_alert, cfg.objective, amounts,
                                            n_boot=max(cfg.n_bootstrap, 1000), seed=cfg.seed)
    out = {"vs_champion_cost_diff_per_1k": diff["diff_per_1k"], "champion_expected_cost_per_1k": diff["baseline_per_1k"],
           "champion_alert_rate": float(np.mean(champion_alert)), "champion_version": float(champion.ref.version)}
    if "ci_low" in diff:
        out["vs_champion_cost_diff_per_1k_ci_low"], out["vs_champion_cost_diff_per_1k_ci_high"] = (
            diff["ci_low"], diff["ci_high"])
    log.info("test cost vs the champion (version %s): %+.2f per 1,000 [%.2f, %.2f] (champion %.2f)",
             champion.ref.version, diff["diff_per_1k"], diff.get("ci_low", np.nan), diff.get("ci_high", np.nan),
             diff["baseline_per_1k"])
    return out


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
    objective = flat.pop("objective")
    flat.update({f"objective_{k}": v for k, v in objective.items()})
    return {k: ",".join(v) if isinstance(v, tuple | list) else str(v) for k, v in flat.items()}
