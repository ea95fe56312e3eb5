"""Metrics pinned to hand-computed values and cross-checked against scikit-learn / scipy."""

import numpy as np
import pytest
from scipy.stats import ks_2samp
from sklearn.metrics import f1_score, roc_curve

from kingmaker.objective import Objective
from training import metrics as m

# The scikit-learn documentation example: two frauds, two legit.
Y = np.array([0, 0, 1, 1])
S = np.array([0.1, 0.4, 0.35, 0.8])
NO_AMOUNTS = Objective(review_cost=5.0, missed_fraud_cost=100.0)
AMOUNTS = Objective(review_cost=5.0, amount_feature="amount")  # a missed fraud costs its amount


def test_ranking_metrics_by_hand() -> None:
    assert m.roc_auc(Y, S) == pytest.approx(0.75, abs=1e-12)
    assert m.gini(Y, S) == pytest.approx(0.5, abs=1e-12)
    # ranked: 0.8(F) 0.4(L) 0.35(F) 0.1(L) -> precision 1 at recall .5, 2/3 at recall 1
    assert m.pr_auc(Y, S) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3, abs=1e-12)
    # CDFs of fraud/legit scores differ by at most 0.5 (at 0.1 and at 0.4)
    assert m.ks_statistic(Y, S) == pytest.approx(0.5, abs=1e-12)


def test_threshold_metrics_by_hand() -> None:
    assert m.confusion(Y, S, 0.35) == (2, 1, 0, 1)
    precision, recall, f1 = m.precision_recall_f1(Y, S, 0.35)
    assert (precision, recall, f1) == pytest.approx((2 / 3, 1.0, 0.8), abs=1e-12)
    assert m.precision_recall_f1(Y, S, 0.95) == (0.0, 0.0, 0.0)  # no alerts: defined as 0, not NaN
    assert m.best_f1(Y, S) == pytest.approx((0.8, 0.35), abs=1e-12)


@pytest.mark.parametrize(("fpr", "expected"), [(0.5, 1.0), (0.49, 0.5), (0.0, 0.5), (1.0, 1.0)])
def test_recall_at_fpr_by_hand(fpr: float, expected: float) -> None:
    assert m.recall_at_fpr(Y, S, fpr) == pytest.approx(expected, abs=1e-12)


def test_expected_cost_by_hand() -> None:
    # threshold .5 alerts on 0.8 only: one review (5) and one missed fraud (100) over 4 transactions
    assert m.expected_cost(Y, S, 0.5, NO_AMOUNTS) == pytest.approx(105 / 4 * 1000, abs=1e-9)
    # with amounts, the missed fraud (score .35) costs its amount 30
    assert m.expected_cost(Y, S, 0.5, AMOUNTS, [10, 20, 30, 500]) == pytest.approx(35 / 4 * 1000)


def test_min_cost_threshold_by_hand() -> None:
    # top-k alerting costs (review 40, miss 100): none 200, k=1 140, k=2 180, k=3 120, k=4 160
    cost, t = m.min_cost_threshold(Y, S, Objective(review_cost=40.0))
    assert (cost, t) == pytest.approx((120 / 4 * 1000, 0.35), abs=1e-9)
    # amounts [10, 20, 30, 500]: none 530, k=1 70, k=2 110, k=3 120, k=4 160 -> alert on the 500 only
    cost, t = m.min_cost_threshold(Y, S, Objective(review_cost=40.0, amount_feature="amount"), [10, 20, 30, 500])
    assert (cost, t) == pytest.approx((70 / 4 * 1000, 0.8), abs=1e-9)
    # reviews dearer than any fraud: alert on nothing, and the threshold really flags nothing
    cost, t = m.min_cost_threshold(Y, S, Objective(review_cost=1000.0))
    assert cost == pytest.approx(200 / 4 * 1000) and not (t <= S).any()


@pytest.fixture(scope="module")
def noisy() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    y = (rng.random(20_000) < 0.03).astype(int)
    s = 1 / (1 + np.exp(-(rng.normal(0, 1, y.size) + 2.2 * y - 3)))
    amounts = rng.lognormal(3, 1, y.size)
    return y, s, amounts


def test_ks_matches_scipy(noisy: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    y, s, _ = noisy
    assert m.ks_statistic(y, s) == pytest.approx(ks_2samp(s[y == 1], s[y == 0]).statistic, abs=1e-12)


def test_recall_at_fpr_matches_roc_curve(noisy: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    y, s, _ = noisy
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    for target in m.FPR_POINTS:
        assert m.recall_at_fpr(y, s, target) == pytest.approx(tpr[fpr <= target].max(), abs=1e-12)


def test_best_f1_matches_sklearn_at_its_threshold(noisy: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    y, s, _ = noisy
    best, t = m.best_f1(y, s)
    assert best == pytest.approx(f1_score(y, s >= t), abs=1e-12)
    grid = np.quantile(s, np.linspace(0.5, 0.999, 200))
    assert best >= max(f1_score(y, s >= g) for g in grid) - 1e-12


def test_min_cost_is_the_cost_at_its_threshold_and_beats_a_grid(noisy: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    y, s, a = noisy
    costs = AMOUNTS
    best, t = m.min_cost_threshold(y, s, costs, a)
    assert best == pytest.approx(m.expected_cost(y, s, t, costs, a), rel=1e-12)
    assert all(best <= m.expected_cost(y, s, g, costs, a) + 1e-9 for g in np.quantile(s, np.linspace(0, 1, 101)))


def test_bootstrap_intervals_cover_the_point_and_shrink_with_data(noisy: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    y, s, a = noisy
    big = m.report_with_ci(y, s, 0.5, AMOUNTS, a, n_boot=60, seed=1)
    small = m.report_with_ci(y[:2000], s[:2000], 0.5, AMOUNTS, a[:2000], n_boot=60, seed=1)
    for k in ("roc_auc", "pr_auc", "f1", "expected_cost_per_1k"):
        assert big[f"{k}_ci_low"] <= big[k] <= big[f"{k}_ci_high"]
        assert big[f"{k}_ci_high"] - big[f"{k}_ci_low"] < small[f"{k}_ci_high"] - small[f"{k}_ci_low"]
    assert set(m.report(y, s, 0.5, AMOUNTS)) == {k for k in big if not k.endswith(("_ci_low", "_ci_high"))}
