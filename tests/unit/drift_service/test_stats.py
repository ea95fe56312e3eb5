"""The pure statistics, pinned to hand-computed values and cross-checked against independent code."""

from __future__ import annotations

import bisect
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from drift_service import stats
from drift_service.stats import (
    EPSILON,
    UNSEEN,
    Correction,
    KsResult,
    PsiResult,
    Severity,
    Statistic,
    adjust_pvalues,
    bin_counts,
    combined_severity,
    correct,
    ks,
    psi,
    psi_categorical,
    worst,
)
from kingmaker.reference import quantile_edges

EDGES = [1.5, 3.5]  # three bins: (-inf, 1.5), [1.5, 3.5), [3.5, inf)
REF = [1, 1, 2, 2, 2, 2, 4, 4, 4, 4]  # shares 0.2, 0.4, 0.4


# --- PSI ---------------------------------------------------------------------------------------

def test_psi_matches_hand_computation() -> None:
    # current shares 0.4, 0.4, 0.2 (0 and 1 below 1.5; the 3s in the middle; the 9s above 3.5):
    # (0.4-0.2)ln(0.4/0.2) + 0 + (0.2-0.4)ln(0.2/0.4) = 0.4 ln 2 = 0.27725887222...
    result = psi(REF, [0, 1, 1, 1, 3, 3, 3, 3, 9, 9], edges=EDGES)
    assert result.score == pytest.approx(0.2772588722, abs=1e-6)
    assert result.reference_share == pytest.approx((0.2, 0.4, 0.4))
    assert result.current_share == pytest.approx((0.4, 0.4, 0.2))
    assert result.n_reference == 10 and result.n_current == 10
    assert result.bins == ("[-inf, 1.5)", "[1.5, 3.5)", "[3.5, inf)")


def test_psi_replaces_an_empty_bin_by_epsilon() -> None:
    # current shares 0.5, 0.5, 0 -> the last share becomes 1e-4:
    # 0.3 ln(2.5) + 0.1 ln(1.25) + (1e-4 - 0.4) ln(1e-4 / 0.4) = 0.274887 + 0.022314 + 3.316790 = 3.613992
    result = psi(REF, [1, 1, 1, 1, 1, 2, 2, 2, 2, 2], edges=EDGES)
    assert result.score == pytest.approx(3.6139920258, abs=1e-6)
    assert EPSILON == 1e-4
    # a bin empty on both sides contributes nothing
    assert psi([1, 2, 2], [1, 2, 2], edges=[1.5, 3.5]).score == pytest.approx(0.0, abs=1e-12)


def test_psi_custom_epsilon_changes_only_empty_bins() -> None:
    a = psi(REF, [1, 1, 1, 1, 1, 2, 2, 2, 2, 2], edges=EDGES, epsilon=1e-3)
    expected = 0.3 * math.log(2.5) + 0.1 * math.log(1.25) + (1e-3 - 0.4) * math.log(1e-3 / 0.4)
    assert a.score == pytest.approx(expected, abs=1e-12)


def test_psi_bins_are_left_closed_and_outer_bins_open_ended() -> None:
    # exactly on an edge -> the upper bin; far outside the reference range -> the outer bins
    counts = bin_counts([1.5, 3.5, -1e9, 1e9, -np.inf, np.inf, 1.4999], EDGES)
    assert counts.tolist() == [3, 1, 3]
    rng = np.random.default_rng(3)
    values = rng.integers(0, 6, 1000).astype(float)  # many values exactly on the edges
    edges = [1.0, 2.0, 4.0]
    expected = np.bincount(np.searchsorted(edges, values, side="right"), minlength=4)
    assert bin_counts(values, edges).tolist() == expected.tolist()


def _psi_independent(reference: list[float], current: list[float], edges: list[float], eps: float) -> float:
    """Plain-Python PSI on the same bins: bisect per value, loops, math.log."""
    k = len(edges) + 1
    rc, cc = [0] * k, [0] * k
    for v in reference:
        rc[bisect.bisect_right(edges, v)] += 1
    for v in current:
        cc[bisect.bisect_right(edges, v)] += 1
    total = 0.0
    for r_n, c_n in zip(rc, cc, strict=True):
        r = r_n / len(reference) or eps
        c = c_n / len(current) or eps
        total += (c - r) * math.log(c / r)
    return total


@pytest.mark.parametrize("seed", range(6))
def test_psi_agrees_with_an_independent_implementation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    reference = rng.normal(0, 1, 2000)
    current = rng.normal(rng.uniform(-1, 1), rng.uniform(0.5, 2), int(rng.integers(50, 3000)))
    if seed % 2:  # discrete data: merged quantiles and values on the edges
        reference, current = np.round(reference * 2), np.round(current * 2)
    edges = quantile_edges(reference, 10)
    ours = psi(reference, current, edges=edges).score
    theirs = _psi_independent(reference.tolist(), current.tolist(), edges, EPSILON)
    assert ours == pytest.approx(theirs, abs=1e-9)


def test_psi_is_zero_for_identical_samples_and_symmetric() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=500), rng.normal(0.3, size=700)
    edges = quantile_edges(a)
    assert psi(a, a, edges=edges).score == pytest.approx(0.0, abs=1e-12)
    assert psi(a, b, edges=edges).score == pytest.approx(psi(b, a, edges=edges).score, abs=1e-12)


def test_psi_drops_nan_and_rejects_bad_input() -> None:
    assert psi([*REF, np.nan], [0, 1, 1, 1, 3, 3, 3, 3, 9, 9, np.nan], edges=EDGES).score == \
        pytest.approx(0.4 * math.log(2), abs=1e-9)
    with pytest.raises(ValueError, match="non-empty"):
        psi([np.nan], [1.0], edges=EDGES)
    with pytest.raises(ValueError, match="increasing"):
        psi([1.0], [1.0], edges=[2.0, 1.0])


def test_categorical_psi_gives_unseen_categories_their_own_bin() -> None:
    # reference a,a,b,b -> 0.5, 0.5, unseen 0 (-> 1e-4); current a,b,b,c -> 0.25, 0.5, 0.25
    # (0.25-0.5)ln(0.5) + 0 + (0.25-1e-4)ln(0.25/1e-4) = 0.173287 + 1.955229 = 2.128516
    result = psi_categorical(["a", "a", "b", "b"], ["a", "b", "b", "c"])
    assert result.score == pytest.approx(2.1285158933, abs=1e-6)
    assert result.bins == ("a", "b", UNSEEN)
    assert result.statistic is Statistic.PSI_CATEGORICAL
    # numeric codes and missing values
    codes = psi_categorical([1.0, 1.0, 2.0, 2.0, np.nan], [1.0, 2.0, 2.0, 3.0])
    assert codes.score == pytest.approx(result.score, abs=1e-12)
    assert psi_categorical(["x", None, "y"], ["y", "x", None]).n_current == 2


# --- KS ----------------------------------------------------------------------------------------

def test_ks_statistic_by_hand() -> None:
    # F_ref(2) = 0.5 while F_cur(2) = 0; the gap never exceeds that
    assert ks([1, 2, 3, 4], [3, 4, 5, 6]).d == pytest.approx(0.5, abs=1e-12)
    # ties: F_ref = .25 at 1, .75 at 2, 1 at 3; F_cur jumps 0 -> 1 at 2: the sup is 0.25 (not 0.5 or 0.75)
    assert ks([1, 2, 2, 3], [2, 2, 2, 2]).d == pytest.approx(0.25, abs=1e-12)
    assert ks([1, 2], [3, 4]).d == pytest.approx(1.0, abs=1e-12)
    assert ks([5, 6, 7], [5, 6, 7]).d == pytest.approx(0.0, abs=1e-12)


def test_ks_pvalue_by_hand() -> None:
    # one reference value against 100 current values: round(1*100/101) = 1, and for n = 1 the
    # Kolmogorov statistic is max(U, 1-U), so P(D >= d) = 2(1 - d). D = max(F_cur(74.5-), 1 - F_cur(74.5)) = 0.75
    result = ks([74.5], np.arange(100))
    assert result.d == pytest.approx(0.75, abs=1e-12)
    assert result.p_value == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize("seed", range(40))
def test_ks_agrees_with_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, m = (int(v) for v in rng.integers(2, 400, 2))
    if seed % 3 == 0:  # heavy ties
        a, b = rng.integers(0, 6, n).astype(float), rng.integers(0, 7, m).astype(float)
    else:
        a, b = rng.normal(size=n), rng.normal(rng.uniform(0, 0.5), size=m)
    ours = ks(a, b)
    theirs = scipy_stats.ks_2samp(a, b, method="asymp")
    assert ours.d == pytest.approx(theirs.statistic, abs=1e-12)
    assert ours.p_value == pytest.approx(theirs.pvalue, abs=1e-10)
    assert ks(b, a).d == pytest.approx(ours.d, abs=1e-12)


def test_ks_agrees_with_scipy_default_on_large_samples() -> None:
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=20_000), rng.normal(0.02, size=15_000)
    theirs = scipy_stats.ks_2samp(a, b)  # scipy picks the asymptotic method above 10,000
    ours = ks(a, b)
    assert ours.d == pytest.approx(theirs.statistic, abs=1e-12)
    assert ours.p_value == pytest.approx(theirs.pvalue, abs=1e-10)


# --- results carry the direction ------------------------------------------------------------------

def test_psi_result_direction_and_severity() -> None:
    def r(score: float) -> PsiResult:
        return PsiResult(score, 0.1, 0.25, (), (), (), 1, 1)

    assert not r(0.0999).drifted and r(0.0999).severity is Severity.NONE
    assert r(0.1).drifted and r(0.1).severity is Severity.MODERATE
    assert r(0.25).severity is Severity.SEVERE


def test_ks_result_direction_uses_the_adjusted_p_value() -> None:
    raw = KsResult(d=0.1, p_value=0.04, threshold=0.05, n_reference=1, n_current=1)
    assert raw.drifted and raw.score == 0.04 and raw.severity is Severity.MODERATE
    adjusted = KsResult(d=0.1, p_value=0.04, threshold=0.05, n_reference=1, n_current=1, p_adjusted=0.2)
    assert not adjusted.drifted and adjusted.score == 0.2 and adjusted.severity is Severity.NONE
    assert KsResult(d=0.1, p_value=0.05, threshold=0.05, n_reference=1, n_current=1).drifted  # p <= α


# --- multiple testing --------------------------------------------------------------------------

def test_benjamini_hochberg_by_hand() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 -> *4/rank: 0.02, 0.02, 0.04, 0.04 (already monotone)
    assert adjust_pvalues([0.01, 0.04, 0.03, 0.005]).tolist() == pytest.approx([0.02, 0.04, 0.04, 0.02], abs=1e-12)
    # step-up: 0.03*3/2 = 0.045 is lowered to the next rank's 0.04*3/3 = 0.04
    assert adjust_pvalues([0.001, 0.03, 0.04]).tolist() == pytest.approx([0.003, 0.04, 0.04], abs=1e-12)
    assert adjust_pvalues([0.5, 0.9]).tolist() == pytest.approx([0.9, 0.9], abs=1e-12)


def test_bonferroni_and_none() -> None:
    assert adjust_pvalues([0.01, 0.3], Correction.BONFERRONI).tolist() == pytest.approx([0.02, 0.6], abs=1e-12)
    assert adjust_pvalues([0.01, 0.6], Correction.BONFERRONI).tolist() == pytest.approx([0.02, 1.0], abs=1e-12)
    assert adjust_pvalues([0.01, 0.6], Correction.NONE).tolist() == [0.01, 0.6]
    assert adjust_pvalues([]).size == 0
    with pytest.raises(ValueError):
        adjust_pvalues([1.5])


def test_benjamini_hochberg_agrees_with_scipy() -> None:
    rng = np.random.default_rng(11)
    p = np.concatenate([rng.uniform(size=40), rng.uniform(0, 0.01, 10)])
    assert adjust_pvalues(p) == pytest.approx(scipy_stats.false_discovery_control(p, method="bh"), abs=1e-12)


def test_correct_sets_adjusted_values_and_keeps_raw() -> None:
    results = [KsResult(0.1, p, 0.05, 10, 10) for p in (0.01, 0.04, 0.03, 0.005)]
    corrected = correct(results)
    assert [r.p_value for r in corrected] == [0.01, 0.04, 0.03, 0.005]
    assert [r.p_adjusted for r in corrected] == pytest.approx([0.02, 0.04, 0.04, 0.02], abs=1e-12)
    assert [r.drifted for r in corrected] == [True, True, True, True]
    assert [r.drifted for r in correct(results, Correction.BONFERRONI)] == [True, False, False, True]


# --- severity --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("psi_score", "p", "expected"), [
    (0.05, 0.5, Severity.NONE),
    (0.05, 0.001, Severity.MODERATE),  # significant but small: at most moderate
    (0.15, 0.5, Severity.MODERATE),
    (0.15, 0.001, Severity.SEVERE),  # moderate size confirmed by KS
    (0.30, 0.5, Severity.SEVERE),
])
def test_combined_severity(psi_score: float, p: float, expected: Severity) -> None:
    p_result = PsiResult(psi_score, 0.1, 0.25, (), (), (), 100, 100)
    assert combined_severity(p_result, KsResult(0.1, p, 0.05, 100, 100)) is expected


def test_combined_severity_without_ks_uses_psi_alone() -> None:
    assert combined_severity(PsiResult(0.15, 0.1, 0.25, (), (), (), 1, 1)) is Severity.MODERATE


def test_worst_orders_by_level_not_by_name() -> None:
    assert worst([Severity.NONE, Severity.SEVERE, Severity.MODERATE]) is Severity.SEVERE
    assert worst([Severity.NONE, Severity.INSUFFICIENT_DATA]) is Severity.NONE
    assert worst([Severity.INSUFFICIENT_DATA]) is Severity.INSUFFICIENT_DATA
    assert worst([]) is Severity.INSUFFICIENT_DATA
    assert [s.level for s in Severity] == [-1, 0, 1, 2]


def test_statistics_are_registered_by_name() -> None:
    assert set(stats.STATISTICS) == set(Statistic)
    assert stats.STATISTICS[Statistic("ks")]([1, 2], [1, 2]).drifted is False
    assert stats.STATISTICS[Statistic("psi")]([1, 2], [1, 2], edges=[1.5]).score == 0.0
