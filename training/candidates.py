"""Candidate models: XGBoost (primary) and two scikit-learn baselines.

Each candidate is a name, an MLflow flavor, default hyper-parameters and a factory taking the
class balance (negatives / positives) so imbalance is handled the model's own way: XGBoost's
``scale_pos_weight`` = imbalance ** 0.75 (on the real data, 5-fold CV PR-AUC was 0.861 with no
weighting, 0.867 with ** 0.5, 0.868 with ** 0.75, 0.861 with the full ratio), class weights for
the scikit-learn models.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.ensemble import ExtraTreesClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

Params = Mapping[str, Any]


def _xgboost(params: Params, imbalance: float, seed: int, n_jobs: int) -> ClassifierMixin:
    from xgboost import XGBClassifier

    p = dict(params)
    spw_power = float(p.pop("scale_pos_weight_power"))
    return XGBClassifier(**p, scale_pos_weight=imbalance**spw_power, tree_method="hist", random_state=seed,
                         n_jobs=n_jobs, eval_metric="aucpr")


def _logreg(params: Params, imbalance: float, seed: int, n_jobs: int) -> ClassifierMixin:
    return Pipeline([("scale", StandardScaler()),
                     ("clf", LogisticRegression(**params, class_weight="balanced", random_state=seed))])


def _forest(params: Params, imbalance: float, seed: int, n_jobs: int) -> ClassifierMixin:
    return ExtraTreesClassifier(**params, class_weight="balanced_subsample", random_state=seed, n_jobs=n_jobs)


@dataclass(frozen=True)
class Candidate:
    name: str
    flavor: str  # MLflow flavor used to save it
    factory: Callable[[Params, float, int, int], ClassifierMixin]
    defaults: Params
    search_space: tuple[Params, ...] = field(default_factory=tuple)  # overrides tried by --tune

    def build(self, imbalance: float, *, seed: int = 0, n_jobs: int = 2, params: Params | None = None) -> ClassifierMixin:
        return self.factory({**self.defaults, **(params or {})}, imbalance, seed, n_jobs)


@dataclass
class CandidateResult:
    """One trial of a candidate, cross-validated on the training part; ``test`` is filled once it is refit
    and scored on the held-out part."""

    name: str
    params: dict[str, Any]
    cv: dict[str, float]  # mean and sd per metric
    threshold: float  # on the out-of-fold scores; with an alert rate, reset to the deployed model's quantile
    oof: np.ndarray
    fit_seconds: float
    test: dict[str, float] = field(default_factory=dict)
    alert_rate: float | None = None  # the operating point, when it is an alert rate


CANDIDATES: dict[str, Candidate] = {
    "xgboost": Candidate(
        "xgboost", "xgboost", _xgboost,
        defaults={"n_estimators": 300, "learning_rate": 0.05, "max_depth": 6, "min_child_weight": 1,
                  "subsample": 0.8, "colsample_bytree": 0.6, "reg_lambda": 1.0, "scale_pos_weight_power": 0.75},
        search_space=(
            {},
            {"max_depth": 4, "n_estimators": 500},
            {"max_depth": 8, "min_child_weight": 3},
            {"learning_rate": 0.1, "n_estimators": 200},
            {"scale_pos_weight_power": 0.5},
            {"scale_pos_weight_power": 1.0},
            {"colsample_bytree": 0.9, "subsample": 0.9},
            {"n_estimators": 600, "learning_rate": 0.03},
        ),
    ),
    "logreg": Candidate("logreg", "sklearn", _logreg, defaults={"C": 1.0, "max_iter": 2000}),
    "forest": Candidate("forest", "sklearn", _forest,
                        defaults={"n_estimators": 150, "min_samples_leaf": 2, "max_features": 0.5, "max_samples": 0.5,
                                  "bootstrap": True}),
}


def get(names: list[str]) -> list[Candidate]:
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        from kingmaker.errors import PermanentError

        raise PermanentError(f"unknown candidate(s) {', '.join(unknown)}; choose from {', '.join(CANDIDATES)}")
    return [CANDIDATES[n] for n in names]


def feature_importance(model: Any, features: list[str]) -> dict[str, float]:
    """Importance per feature: XGBoost gain, forest impurity decrease, |coefficient| for linear models."""
    if hasattr(model, "get_booster"):
        gain = model.get_booster().get_score(importance_type="gain")
        return {f: float(gain.get(f, 0.0)) for f in features}
    if hasattr(model, "feature_importances_"):
        return dict(zip(features, map(float, model.feature_importances_), strict=True))
    clf = model.named_steps["clf"]
    return dict(zip(features, map(float, abs(clf.coef_[0])), strict=True))
