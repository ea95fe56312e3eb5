"""The operating point: an alert rate chosen on out-of-fold scores, carried to the deployed model as a quantile
of its own scores, and the deployed model's cost against the champion's as a paired difference.

Why a rate and not a threshold: a threshold chosen on out-of-fold scores (fold models) does not transfer to the
model refit on all the training rows, whose scores sit higher (median ratio 1.19 for XGBoost on the credit-card
data: 182 alerts instead of ~160 on the test part), and the minimum of the pooled cost curve is unstable (the
best threshold per fold ranged from 0.0085 to 0.987 on flat curves). A share of traffic transfers: the deployed
model flags the same share of new rows when its threshold is that quantile of its scores on rows it was not
fitted on (`quantile_threshold`).

Pure: NumPy only.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from kingmaker.objective import Objective

Array = npt.NDArray[np.float64]
#: Rates tried around the objective's (x 1/4 ... x 4): the choice stays near the policy unless the folds agree.
RATE_MULTIPLES = (0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0)


def cost_at_rate(y: npt.ArrayLike, score: npt.ArrayLike, rate: float, objective: Objective,
                 amounts: npt.ArrayLike | None = None) -> float:
    """Cost per 1,000 transactions when the top ``rate`` share of ``score`` is flagged (at least one row)."""
    s = np.asarray(score, dtype=float)
    k = max(1, round(rate * len(s)))
    alert = np.zeros(len(s), dtype=bool)
    alert[np.argsort(-s, kind="stable")[:k]] = True
    return float(1000.0 * objective.row_costs(y, alert, amounts).mean())


def choose_alert_rate(y: npt.ArrayLike, oof: npt.ArrayLike, fold_of: npt.ArrayLike, objective: Objective,
                      amounts: npt.ArrayLike | None = None) -> tuple[float, dict[float, float]]:
    """The alert rate, chosen robustly on out-of-fold scores: (rate, mean cost per 1,000 at each rate tried).

    Each fold's cost is measured at *matched rates* (the fold's own top share), so a fold whose scores sit higher
    does not move the others; the curves are averaged over folds. Of the rates whose mean cost is within one
    standard error (over folds) of the lowest, the one closest to the objective's rate is taken: cost curves are
    flat near their minimum, and a minimum within the noise is no reason to leave the deployment's policy.
    """
    if objective.alert_rate is None:
        raise ValueError("the objective needs an alert rate (Objective.for_labels)")
    anchor = objective.alert_rate
    grid = sorted({min(0.5, anchor * m) for m in RATE_MULTIPLES})
    yv, sv, folds = np.asarray(y), np.asarray(oof, dtype=float), np.asarray(fold_of)
    av = None if amounts is None else np.asarray(amounts, dtype=float)
    curves = np.array([[cost_at_rate(yv[f], sv[f], r, objective, None if av is None else av[f]) for r in grid]
                       for f in (folds == k for k in np.unique(folds))])
    mean = curves.mean(axis=0)
    se = curves.std(axis=0, ddof=1) / math.sqrt(len(curves)) if len(curves) > 1 else np.zeros(len(grid))
    best = int(np.argmin(mean))
    near = [i for i in range(len(grid)) if mean[i] <= mean[best] + se[best]]
    chosen = min(near, key=lambda i: abs(math.log(grid[i] / anchor)))
    return grid[chosen], dict(zip(grid, (float(c) for c in mean), strict=True))


def quantile_threshold(scores: npt.ArrayLike, rate: float) -> float:
    """The threshold at which ``score >= threshold`` flags a ``rate`` share of ``scores``."""
    s = np.asarray(scores, dtype=float)
    if len(s) == 0:
        raise ValueError("no scores to take a quantile of")
    return float(np.quantile(s, 1.0 - rate, method="higher"))


def calibrated_alerts(cal_scores: npt.ArrayLike, cal_y: npt.ArrayLike, scores: npt.ArrayLike, objective: Objective,
                      amounts: npt.ArrayLike | None = None) -> npt.NDArray[np.bool_]:
    """The alternative operating point, measured next to the alert-rate quantile: an isotonic calibration of the
    deployed model's scores fitted on rows it has not seen (``cal_scores``, ``cal_y``), and an alert wherever the
    calibrated P(fraud) x what missing it would cost is at least the review cost (the cost-optimal rule)."""
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(np.asarray(cal_scores, dtype=float),
                                                                          np.asarray(cal_y, dtype=float))
    p = iso.predict(np.asarray(scores, dtype=float))
    return np.asarray(p * objective.miss_costs(len(p), amounts) >= objective.review_cost)


def paired_cost_difference(y: npt.ArrayLike, alert: npt.ArrayLike, baseline_alert: npt.ArrayLike,
                           objective: Objective, amounts: npt.ArrayLike | None = None, *, n_boot: int = 2000,
                           seed: int = 0) -> dict[str, float]:
    """Cost per 1,000 of ``alert`` minus that of ``baseline_alert`` on the same transactions (negative: cheaper),
    with a paired bootstrap 95% interval (rows resampled, both decisions kept together)."""
    baseline = objective.row_costs(y, baseline_alert, amounts)
    d = objective.row_costs(y, alert, amounts) - baseline
    out = {"diff_per_1k": float(1000.0 * d.mean()), "baseline_per_1k": float(1000.0 * baseline.mean()),
           "discordant_rows": float((d != 0).sum())}
    if n_boot > 0:
        out["ci_low"], out["ci_high"] = (1000.0 * q for q in bootstrap_mean_ci(d, n_boot, seed))
    return out


def bootstrap_mean_ci(d: npt.NDArray[np.float64], n_boot: int, seed: int) -> tuple[float, float]:
    """A 95% bootstrap interval for the mean of the per-row differences ``d`` (rows resampled)."""
    rng = np.random.default_rng(seed)
    n = len(d)
    means = np.array([d[rng.integers(0, n, n)].mean() for _ in range(n_boot)])
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high)
