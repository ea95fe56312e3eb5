"""Evaluation metrics for fraud scores: pure functions of (labels, scores[, amounts]).

Every function takes ``y`` (0/1) and ``score`` (higher = more likely fraud). Costs are per 1,000
transactions under the deployment's `Objective` (`kingmaker.objective`): each alert costs a review, each
missed fraud a fixed cost, or its amount (capped) when the objective prices misses by amount. Bootstrap intervals (`report_with_ci`) resample
rows with replacement and take the 2.5% and 97.5% percentiles.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from kingmaker.objective import Objective

Array = npt.NDArray[np.float64]
FPR_POINTS = (0.001, 0.01)


def roc_auc(y: npt.ArrayLike, score: npt.ArrayLike) -> float:
    return float(roc_auc_score(y, score))


def pr_auc(y: npt.ArrayLike, score: npt.ArrayLike) -> float:
    """Average precision (the step-wise area under the precision-recall curve)."""
    return float(average_precision_score(y, score))


def gini(y: npt.ArrayLike, score: npt.ArrayLike) -> float:
    return 2.0 * roc_auc(y, score) - 1.0


def ks_statistic(y: npt.ArrayLike, score: npt.ArrayLike) -> float:
    """Kolmogorov-Smirnov separation: max |CDF_fraud(s) - CDF_legit(s)| over thresholds s."""
    y = np.asarray(y)
    s = np.asarray(score, dtype=float)
    pos, neg = np.sort(s[y == 1]), np.sort(s[y == 0])
    grid = np.unique(s)
    cdf_pos = np.searchsorted(pos, grid, side="right") / len(pos)
    cdf_neg = np.searchsorted(neg, grid, side="right") / len(neg)
    return float(np.max(np.abs(cdf_pos - cdf_neg)))


def confusion(y: npt.ArrayLike, score: npt.ArrayLike, threshold: float) -> tuple[int, int, int, int]:
    """(tp, fp, fn, tn) when alerting on ``score >= threshold``."""
    y = np.asarray(y).astype(bool)
    alert = np.asarray(score) >= threshold
    tp = int(np.sum(alert & y))
    fp = int(np.sum(alert & ~y))
    fn = int(np.sum(~alert & y))
    return tp, fp, fn, int(len(y) - tp - fp - fn)


def precision_recall_f1(y: npt.ArrayLike, score: npt.ArrayLike, threshold: float) -> tuple[float, float, float]:
    tp, fp, fn, _ = confusion(y, score, threshold)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def recall_at_fpr(y: npt.ArrayLike, score: npt.ArrayLike, max_fpr: float) -> float:
    """Highest recall whose false-positive rate does not exceed ``max_fpr`` (alerting on score >= t)."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(score, dtype=float)
    neg = np.sort(s[~y])[::-1]  # descending
    allowed = int(np.floor(max_fpr * len(neg)))  # negatives we may flag
    # smallest threshold that flags at most `allowed` negatives: just above the (allowed+1)-th largest
    threshold = np.nextafter(neg[allowed], np.inf) if allowed < len(neg) else -np.inf
    return float(np.mean(s[y] >= threshold))


def best_f1(y: npt.ArrayLike, score: npt.ArrayLike) -> tuple[float, float]:
    """(best F1 over all thresholds, the threshold reaching it)."""
    precision, recall, thresholds = precision_recall_curve(y, score)
    p, r = precision[:-1], recall[:-1]
    f1 = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)
    i = int(np.argmax(f1))
    return float(f1[i]), float(thresholds[i])


def expected_cost(y: npt.ArrayLike, score: npt.ArrayLike, threshold: float, costs: Objective,
                  amounts: npt.ArrayLike | None = None) -> float:
    """Cost per 1,000 transactions: reviews of every alert plus the cost of every missed fraud."""
    return float(1000.0 * costs.row_costs(y, np.asarray(score) >= threshold, amounts).mean())


def min_cost_threshold(y: npt.ArrayLike, score: npt.ArrayLike, costs: Objective,
                       amounts: npt.ArrayLike | None = None) -> tuple[float, float]:
    """(lowest expected cost per 1,000, the threshold reaching it), over all distinct scores.

    Sorting once makes this O(n log n): alerting on the top-k rows costs k reviews plus the
    miss cost of every fraud outside the top k.
    """
    y = np.asarray(y).astype(bool)
    s = np.asarray(score, dtype=float)
    miss = costs.miss_costs(len(y), None if amounts is None else np.asarray(amounts, dtype=float)) * y
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    # candidate cut after position k-1 only where the score changes (ties alert together)
    ends = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True]) + 1
    caught = np.r_[0.0, np.cumsum(miss[order])]
    total = costs.review_cost * ends + (miss.sum() - caught[ends])
    cost_none = miss.sum()  # alert on nothing
    i = int(np.argmin(total))
    if cost_none <= total[i]:
        return float(1000.0 * cost_none / len(y)), float(np.nextafter(s.max(), np.inf))
    return float(1000.0 * total[i] / len(y)), float(s_sorted[ends[i] - 1])


def report(y: npt.ArrayLike, score: npt.ArrayLike, threshold: float, costs: Objective,
           amounts: npt.ArrayLike | None = None) -> dict[str, float]:
    """All headline metrics at once (names are the MLflow metric keys)."""
    precision, recall, f1 = precision_recall_f1(y, score, threshold)
    out = {
        "roc_auc": roc_auc(y, score), "pr_auc": pr_auc(y, score), "gini": gini(y, score),
        "ks": ks_statistic(y, score), "precision": precision, "recall": recall, "f1": f1,
        "best_f1": best_f1(y, score)[0], "alert_rate": float(np.mean(np.asarray(score) >= threshold)),
        "expected_cost_per_1k": expected_cost(y, score, threshold, costs, amounts),
    }
    for fpr in FPR_POINTS:
        out[f"recall_at_fpr_{fpr:g}"] = recall_at_fpr(y, score, fpr)
    return out


def report_with_ci(y: npt.ArrayLike, score: npt.ArrayLike, threshold: float, costs: Objective,
                   amounts: npt.ArrayLike | None = None, *, n_boot: int = 200, seed: int = 0) -> dict[str, float]:
    """`report` plus ``<name>_ci_low``/``<name>_ci_high`` from one shared set of bootstrap resamples."""
    point = report(y, score, threshold, costs, amounts)
    if n_boot <= 0:
        return point
    y = np.asarray(y)
    s = np.asarray(score, dtype=float)
    a = None if amounts is None else np.asarray(amounts, dtype=float)
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {k: [] for k in point}
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        if y[idx].min() == y[idx].max():
            continue
        for k, v in report(y[idx], s[idx], threshold, costs, None if a is None else a[idx]).items():
            samples[k].append(v)
    out = dict(point)
    for k, vals in samples.items():
        if vals:
            out[f"{k}_ci_low"], out[f"{k}_ci_high"] = (float(q) for q in np.quantile(vals, [0.025, 0.975]))
    return out
