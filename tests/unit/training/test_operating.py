"""The operating point (`training.operating`): a robust alert rate on out-of-fold scores, its transfer to a
model whose scores sit higher, and the paired cost difference against a champion."""

from __future__ import annotations

import numpy as np
import pytest

from kingmaker.objective import Objective
from training import operating as op


def scores(rng: np.random.Generator, y: np.ndarray, separation: float = 3.0) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(rng.normal(size=len(y)) + separation * y - 5.0)))


def test_cost_at_rate_flags_the_top_share() -> None:
    y = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 0])
    s = np.linspace(1.0, 0.1, 10)  # descending: the first rows are flagged first
    assert op.cost_at_rate(y, s, 0.1, Objective()) == pytest.approx(1000 * (5 + 100) / 10)  # one review, one miss
    assert op.cost_at_rate(y, s, 0.3, Objective()) == pytest.approx(1000 * 15 / 10)


def test_the_rate_stays_at_the_objectives_when_the_folds_cannot_tell_rates_apart() -> None:
    """Flat, noisy fold curves (as on the credit-card data): no move away from the policy's rate. Every row is a
    fraud with chance 5% = review cost / missed cost, so each extra alert saves what it costs, on average."""
    rng = np.random.default_rng(1)
    y = (rng.random(20_000) < 0.05).astype(int)
    oof = rng.random(len(y))
    rate, curve = op.choose_alert_rate(y, oof, rng.integers(0, 5, len(y)), Objective(alert_rate=0.004))
    assert rate == 0.004 and len(curve) == len(op.RATE_MULTIPLES)


def test_the_rate_moves_when_every_fold_agrees() -> None:
    """Misses far dearer than reviews and a model that ranks well: the folds agree that more alerts pay."""
    rng = np.random.default_rng(2)
    y = (rng.random(40_000) < 0.02).astype(int)
    oof = scores(rng, y)
    rate, curve = op.choose_alert_rate(y, oof, rng.integers(0, 5, len(y)), Objective(alert_rate=0.01,
                                                                                      missed_fraud_cost=1000.0))
    assert rate > 0.01 and curve[rate] < curve[0.01]


def test_a_quantile_of_the_deployed_models_own_scores_keeps_the_rate_where_a_threshold_does_not() -> None:
    """The refit model's scores sit ~1.19x higher than the fold models': a threshold taken on out-of-fold scores
    flags too many new rows, the same share of the deployed model's own scores on unseen rows does not."""
    rng = np.random.default_rng(3)
    y_cal, y_new = (rng.random(50_000) < 0.01).astype(int), (rng.random(50_000) < 0.01).astype(int)
    oof = scores(rng, y_cal)
    deployed_cal, deployed_new = np.minimum(1.0, 1.19 * scores(rng, y_cal)), np.minimum(1.0, 1.19 * scores(rng, y_new))
    rate = 0.02
    from_oof = float(np.mean(deployed_new >= op.quantile_threshold(oof, rate)))
    from_deployed = float(np.mean(deployed_new >= op.quantile_threshold(deployed_cal, rate)))
    assert from_oof / rate > 1.2  # the transfer problem
    assert from_deployed / rate == pytest.approx(1.0, abs=0.1)


def test_paired_cost_difference_with_a_bootstrap_interval() -> None:
    rng = np.random.default_rng(4)
    y = (rng.random(30_000) < 0.01).astype(int)
    good, bad = scores(rng, y, 4.0), scores(rng, y, 1.5)
    alert_good, alert_bad = good >= np.quantile(good, 0.98), bad >= np.quantile(bad, 0.98)
    d = op.paired_cost_difference(y, alert_good, alert_bad, Objective(), n_boot=300)
    expected = 1000 * (Objective().row_costs(y, alert_good) - Objective().row_costs(y, alert_bad)).mean()
    assert d["diff_per_1k"] == pytest.approx(expected) and d["ci_low"] < d["diff_per_1k"] < d["ci_high"] < 0
    same = op.paired_cost_difference(y, alert_good, alert_good, Objective(), n_boot=100)
    assert same["diff_per_1k"] == same["ci_low"] == same["ci_high"] == 0.0 and same["discordant_rows"] == 0


def test_calibrated_alerts_flag_where_calibrated_probability_times_the_miss_cost_reaches_the_review_cost() -> None:
    # isotonic fit (pool adjacent violators) on scores 0.1..0.5 with labels 0, 1, 0, 0, 1: P = 0, 1/3, 1/3, 1/3, 1
    cal_scores, cal_y = [0.1, 0.2, 0.3, 0.4, 0.5], [0, 1, 0, 0, 1]
    scores = np.array([0.05, 0.25, 0.45, 0.5, 0.9])  # P = 0 (clipped), 1/3, 2/3 (interpolated), 1, 1 (clipped)
    cheap_review = Objective(review_cost=5.0, missed_fraud_cost=100.0)
    assert op.calibrated_alerts(cal_scores, cal_y, scores, cheap_review).tolist() == [False, True, True, True, True]
    dear_review = Objective(review_cost=40.0, missed_fraud_cost=100.0)  # needs P >= 0.4
    assert op.calibrated_alerts(cal_scores, cal_y, scores, dear_review).tolist() == [False, False, True, True, True]
    # with amounts: a missed fraud costs its amount (capped), so a small P on a large amount still alerts
    by_amount = Objective(review_cost=40.0, amount_feature="Amount", amount_cap=500.0)
    amounts = np.array([10_000.0, 200.0, 50.0, 30.0, 10.0])
    assert op.calibrated_alerts(cal_scores, cal_y, scores, by_amount, amounts).tolist() == [False, True, False, False,
                                                                                         False]
