"""Drift statistics: pure functions of two samples, no I/O.

Every statistic is one function ``(reference, current, *, threshold...) -> Result`` and is registered
by name in `STATISTICS`. The result carries the score, the threshold it was compared with and the
*direction* of the comparison, so a call site asks ``result.drifted`` and never compares numbers itself:

- `psi` / `psi_categorical` -> `PsiResult`: drifted when ``score >= threshold`` (higher is worse).
- `ks` -> `KsResult`: drifted when the (corrected) p-value ``<= threshold`` (α; lower is worse).

PSI (population stability index) is ``sum_i (c_i - r_i) * ln(c_i / r_i)`` over bins, where ``r_i`` and
``c_i`` are the shares of the reference and the current sample in bin ``i``. The bins come from the
**reference only** (the quantile cut points stored with the model version, see `kingmaker.reference`):
inner cut points ``e_1 < ... < e_k`` make ``k + 1`` left-closed bins, a value ``v`` falls in bin
``searchsorted(edges, v, side="right")``, and the two outer bins are open-ended, so values outside the
reference range count in the first or last bin. **Empty-bin epsilon**: a share of exactly zero (in
either sample) is replaced by `EPSILON` (1e-4) before the formula is applied; shares are not
renormalised afterwards. A bin empty in both samples therefore contributes exactly 0.

KS is the two-sample Kolmogorov–Smirnov statistic ``D = sup_x |F_ref(x) - F_cur(x)|`` computed exactly
from sorted samples (ties handled), with Smirnov's asymptotic two-sided p-value
``kstwo.sf(D, round(n*m/(n+m)))`` — the same number ``scipy.stats.ks_2samp(..., method="asymp")``
returns; drift windows are far larger than the sizes where the exact distribution matters. p-values of
many features are corrected together with `correct` (Benjamini–Hochberg by default, or Bonferroni).

NaN values are dropped before any statistic; ``±inf`` count in the outer bins. Numeric samples whose
reference has at most `LOW_CARDINALITY` distinct values are binned per value instead (`psi_numeric`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy.stats import kstwo

FloatArray = npt.NDArray[np.float64]

#: Share substituted for an empty bin before taking logarithms (see the module docstring).
EPSILON: Final = 1e-4
#: Default PSI thresholds: moderate from 0.1, severe from 0.25 (the usual credit-risk rule of thumb).
PSI_MODERATE: Final = 0.1
PSI_SEVERE: Final = 0.25
#: Default family-wise significance level for KS tests.
ALPHA: Final = 0.05
#: Label of the extra bin that holds categories the reference never saw.
UNSEEN: Final = "<unseen>"
#: A numeric sample with at most this many distinct values (a flag, a count) is binned per value, like a
#: category: its quantile cut points would merge into one or two bins (a binary feature's deciles are all
#: 0 or 1), hiding a shift from 5 % to 20 % ones entirely.
LOW_CARDINALITY: Final = 10


class Severity(StrEnum):
    """How far a distribution has moved. Order by `level`, never by the string value."""

    INSUFFICIENT_DATA = "insufficient_data"
    NONE = "none"
    MODERATE = "moderate"
    SEVERE = "severe"

    @property
    def level(self) -> int:
        """Ordinal for gauges and comparisons: -1 insufficient data, 0 none, 1 moderate, 2 severe."""
        return _LEVELS[self]


_LEVELS: Final = {Severity.INSUFFICIENT_DATA: -1, Severity.NONE: 0, Severity.MODERATE: 1, Severity.SEVERE: 2}


class Statistic(StrEnum):
    PSI = "psi"
    PSI_CATEGORICAL = "psi_categorical"
    KS = "ks"


class Correction(StrEnum):
    """Multiple-testing correction of p-values across features."""

    BH = "bh"  # Benjamini–Hochberg: controls the false discovery rate
    BONFERRONI = "bonferroni"  # controls the family-wise error rate (more conservative)
    NONE = "none"


@dataclass(frozen=True)
class PsiResult:
    """Population stability index of one feature. Drifted when ``score >= threshold``."""

    score: float
    threshold: float  # moderate drift from here
    severe_threshold: float  # severe drift from here
    bins: tuple[str, ...]  # one label per bin, e.g. "[0.5, 1.2)" or a category
    reference_share: tuple[float, ...]
    current_share: tuple[float, ...]
    n_reference: int
    n_current: int
    statistic: Statistic = Statistic.PSI

    @property
    def drifted(self) -> bool:
        return self.score >= self.threshold

    @property
    def severity(self) -> Severity:
        if self.score >= self.severe_threshold:
            return Severity.SEVERE
        return Severity.MODERATE if self.drifted else Severity.NONE


@dataclass(frozen=True)
class KsResult:
    """Two-sample Kolmogorov–Smirnov test. Drifted when the p-value (corrected if set) ``<= threshold``."""

    d: float  # the KS statistic sup |F_ref - F_cur|
    p_value: float  # raw asymptotic two-sided p-value
    threshold: float  # α
    n_reference: int
    n_current: int
    p_adjusted: float | None = None  # after correction across features (`correct`)
    statistic: Statistic = Statistic.KS

    @property
    def score(self) -> float:
        """The p-value the decision uses: corrected when a correction was applied."""
        return self.p_value if self.p_adjusted is None else self.p_adjusted

    @property
    def drifted(self) -> bool:
        return self.score <= self.threshold

    @property
    def severity(self) -> Severity:
        """A significant KS test is evidence of *some* change, not of its size: at most moderate."""
        return Severity.MODERATE if self.drifted else Severity.NONE


@dataclass(frozen=True)
class SortedSample:
    """A sample with NaNs dropped, sorted once so several statistics can share the work."""

    values: FloatArray

    @classmethod
    def of(cls, values: npt.ArrayLike | SortedSample) -> SortedSample:
        if isinstance(values, SortedSample):
            return values
        x = np.asarray(values, dtype=np.float64).ravel()
        x = x[~np.isnan(x)]
        return cls(np.sort(x))

    def __len__(self) -> int:
        return int(self.values.size)


def _nonempty(*samples: SortedSample) -> None:
    if any(len(s) == 0 for s in samples):
        raise ValueError("drift statistics need non-empty samples (after dropping NaN)")


def bin_counts(sample: npt.ArrayLike | SortedSample, edges: Sequence[float]) -> npt.NDArray[np.int64]:
    """Counts in the ``len(edges) + 1`` left-closed bins ``(-inf, e1), [e1, e2), ..., [ek, inf)``.

    Equivalent to ``bincount(searchsorted(edges, v, side="right"))`` but done on the sorted sample:
    the number of values below each edge is one binary search, so this is O(k log n).
    """
    s = SortedSample.of(sample)
    below = np.searchsorted(s.values, np.asarray(edges, dtype=np.float64), side="left")
    return np.diff(np.concatenate(([0], below, [s.values.size]))).astype(np.int64)


def _shares(counts: npt.NDArray[np.int64]) -> FloatArray:
    total = counts.sum()
    return counts / total if total else np.zeros(counts.shape)


def psi_from_shares(reference_share: npt.ArrayLike, current_share: npt.ArrayLike,
                    *, epsilon: float = EPSILON) -> float:
    """``sum((c - r) * ln(c / r))`` with zero shares replaced by ``epsilon``."""
    r = np.asarray(reference_share, dtype=np.float64)
    c = np.asarray(current_share, dtype=np.float64)
    r = np.where(r == 0.0, epsilon, r)
    c = np.where(c == 0.0, epsilon, c)
    return float(np.sum((c - r) * np.log(c / r)))


def _interval_labels(edges: Sequence[float]) -> tuple[str, ...]:
    bounds = ["-inf", *(f"{e:.4g}" for e in edges), "inf"]
    return tuple(f"[{lo}, {hi})" for lo, hi in itertools.pairwise(bounds))


def psi(reference: npt.ArrayLike | SortedSample, current: npt.ArrayLike | SortedSample, *,
        edges: Sequence[float], threshold: float = PSI_MODERATE, severe_threshold: float = PSI_SEVERE,
        epsilon: float = EPSILON) -> PsiResult:
    """PSI of ``current`` against ``reference`` on the reference-only inner cut points ``edges``.

    ``edges`` are the stored reference quantiles (`kingmaker.reference.quantile_edges`); they are not
    recomputed here, so every window of a model version is binned identically.
    """
    ref, cur = SortedSample.of(reference), SortedSample.of(current)
    _nonempty(ref, cur)
    edges = [float(e) for e in edges]
    if any(b <= a for a, b in itertools.pairwise(edges)):
        raise ValueError("PSI edges must be strictly increasing")
    r, c = _shares(bin_counts(ref, edges)), _shares(bin_counts(cur, edges))
    return PsiResult(score=psi_from_shares(r, c, epsilon=epsilon), threshold=threshold,
                     severe_threshold=severe_threshold, bins=_interval_labels(edges),
                     reference_share=tuple(float(v) for v in r), current_share=tuple(float(v) for v in c),
                     n_reference=len(ref), n_current=len(cur))


def psi_categorical(reference: npt.ArrayLike | Sequence[object], current: npt.ArrayLike | Sequence[object], *,
                    threshold: float = PSI_MODERATE, severe_threshold: float = PSI_SEVERE,
                    epsilon: float = EPSILON) -> PsiResult:
    """PSI with one bin per reference category plus one bin (`UNSEEN`) for categories it never saw.

    Missing values (None/NaN) are dropped. The unseen bin has reference share 0, i.e. ``epsilon``.
    """
    ref = _drop_missing(reference)
    cur = _drop_missing(current)
    if ref.size == 0 or cur.size == 0:
        raise ValueError("drift statistics need non-empty samples (after dropping missing values)")
    categories, ref_counts = np.unique(ref, return_counts=True)
    pos = np.searchsorted(categories, cur)
    seen = pos < categories.size
    seen[seen] = categories[pos[seen]] == cur[seen]
    cur_counts = np.bincount(pos[seen], minlength=categories.size)
    r = _shares(np.append(ref_counts, 0))
    c = _shares(np.append(cur_counts, int((~seen).sum())))
    return PsiResult(score=psi_from_shares(r, c, epsilon=epsilon), threshold=threshold,
                     severe_threshold=severe_threshold, bins=(*(str(v) for v in categories), UNSEEN),
                     reference_share=tuple(float(v) for v in r), current_share=tuple(float(v) for v in c),
                     n_reference=int(ref.size), n_current=int(cur.size),
                     statistic=Statistic.PSI_CATEGORICAL)


def distinct_values(sample: SortedSample) -> int:
    """Number of distinct values of a sorted sample."""
    x = sample.values
    return int(x.size and 1 + np.count_nonzero(x[1:] != x[:-1]))


def psi_numeric(reference: npt.ArrayLike | SortedSample, current: npt.ArrayLike | SortedSample, *,
                edges: Sequence[float], threshold: float = PSI_MODERATE, severe_threshold: float = PSI_SEVERE,
                epsilon: float = EPSILON) -> PsiResult:
    """PSI of a numeric feature: per value (`psi_categorical`) when the reference has at most
    `LOW_CARDINALITY` distinct values, else on the stored quantile cut points ``edges`` (`psi`)."""
    ref, cur = SortedSample.of(reference), SortedSample.of(current)
    if 0 < distinct_values(ref) <= LOW_CARDINALITY:
        return psi_categorical(ref.values, cur.values, threshold=threshold, severe_threshold=severe_threshold,
                               epsilon=epsilon)
    return psi(ref, cur, edges=edges, threshold=threshold, severe_threshold=severe_threshold, epsilon=epsilon)


def _drop_missing(values: npt.ArrayLike | Sequence[object]) -> npt.NDArray[np.generic]:
    x: npt.NDArray[np.generic] = np.asarray(values)
    if x.dtype.kind == "f":
        kept: npt.NDArray[np.generic] = x[~np.isnan(x.astype(np.float64))]
        return kept
    if x.dtype.kind == "O":
        keep = np.array([v is not None and v == v for v in x], dtype=bool)  # v != v only for NaN
        labels: npt.NDArray[np.generic] = x[keep].astype(str)
        return labels
    return x


def ks_statistic(reference: npt.ArrayLike | SortedSample, current: npt.ArrayLike | SortedSample) -> float:
    """``sup_x |F_ref(x) - F_cur(x)|`` from sorted samples, exact with ties.

    Both empirical CDFs are right-continuous step functions, so the supremum is reached at a jump of
    one of them. Between two distinct reference values ``u_j <= x < u_{j+1}`` the reference CDF is the
    constant ``R_j`` while the current CDF rises from ``F_cur(u_j)`` to ``F_cur(u_{j+1}^-)``, so
    comparing ``R_j`` with those two ends covers every jump of the current sample too. That costs two
    binary searches per distinct reference value and never visits the (larger) current sample.
    """
    ref, cur = SortedSample.of(reference), SortedSample.of(current)
    _nonempty(ref, cur)
    r, c = ref.values, cur.values
    last = np.flatnonzero(np.append(r[1:] != r[:-1], True))  # last index of each run of ties
    u = r[last]
    ref_cdf = (last + 1) / r.size  # F_ref(u_j)
    cur_at = np.searchsorted(c, u, side="right") / c.size  # F_cur(u_j)
    cur_before = np.searchsorted(c, u, side="left") / c.size  # F_cur(u_j^-)
    ref_before = np.concatenate(([0.0], ref_cdf[:-1]))  # F_ref just below u_j
    return float(max(np.max(np.abs(ref_cdf - cur_at)), np.max(np.abs(ref_before - cur_before))))


def ks_pvalue(d: float, n_reference: int, n_current: int) -> float:
    """Smirnov's asymptotic two-sided p-value, as ``scipy.stats.ks_2samp(method="asymp")``."""
    m, n = float(max(n_reference, n_current)), float(min(n_reference, n_current))
    en = max(1.0, float(np.round(m * n / (m + n))))
    return float(np.clip(kstwo.sf(d, en), 0.0, 1.0))


def ks(reference: npt.ArrayLike | SortedSample, current: npt.ArrayLike | SortedSample, *,
       threshold: float = ALPHA) -> KsResult:
    """Two-sample KS test of ``current`` against ``reference``; drifted when p ``<= threshold`` (α)."""
    ref, cur = SortedSample.of(reference), SortedSample.of(current)
    d = ks_statistic(ref, cur)
    return KsResult(d=d, p_value=ks_pvalue(d, len(ref), len(cur)), threshold=threshold,
                    n_reference=len(ref), n_current=len(cur))


def adjust_pvalues(p_values: npt.ArrayLike, method: Correction = Correction.BH) -> FloatArray:
    """Corrected p-values in the input order.

    BH: ``p_(i) * m / i`` made monotone from the largest down (step-up), capped at 1; rejecting where
    the adjusted value is ``<= α`` controls the false discovery rate at α. Bonferroni: ``min(1, p*m)``.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0 or method is Correction.NONE:
        return p.copy()
    if np.any((p < 0) | (p > 1)) or np.any(np.isnan(p)):
        raise ValueError("p-values must lie in [0, 1]")
    m = p.size
    if method is Correction.BONFERRONI:
        return np.minimum(1.0, p * m)
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    monotone = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(1.0, monotone)
    return out


def correct(results: Sequence[KsResult], method: Correction = Correction.BH) -> list[KsResult]:
    """The same KS results with ``p_adjusted`` set by correcting their p-values as one family."""
    adjusted = adjust_pvalues([r.p_value for r in results], method)
    return [replace(r, p_adjusted=float(a)) for r, a in zip(results, adjusted, strict=True)]


def combined_severity(psi_result: PsiResult, ks_result: KsResult | None = None) -> Severity:
    """Severity of one distribution from its PSI (size of the change) and KS test (its significance).

    - severe: PSI ``>= severe_threshold``, or PSI ``>= threshold`` *confirmed* by a significant KS test;
    - moderate: PSI ``>= threshold``, or a significant KS test alone;
    - none otherwise.

    A 0.5 SD mean shift of a normal feature has a decile PSI of about 0.24 — just under 0.25 on its
    own — and a vanishing KS p-value on any realistic window: two independent signals agreeing is
    severe. A KS test alone flags tiny, harmless shifts once windows are large, so it never makes a
    feature more than moderate.
    """
    size = psi_result.severity
    significant = ks_result is not None and ks_result.drifted
    if size is Severity.SEVERE or (size is Severity.MODERATE and significant):
        return Severity.SEVERE
    if size is Severity.MODERATE or significant:
        return Severity.MODERATE
    return Severity.NONE


def worst(severities: Iterable[Severity]) -> Severity:
    """The highest severity among those with enough data; insufficient data if none had enough."""
    known = [s for s in severities if s is not Severity.INSUFFICIENT_DATA]
    return max(known, key=lambda s: s.level) if known else Severity.INSUFFICIENT_DATA


#: The statistics by name (for configuration and reports).
STATISTICS: Mapping[Statistic, Callable[..., PsiResult | KsResult]] = {
    Statistic.PSI: psi,
    Statistic.PSI_CATEGORICAL: psi_categorical,
    Statistic.KS: ks,
}
