"""The drift analysis of one window: pure computation from plain values to a `DriftResult`.

Inputs are a `Window` (rows of the prediction log, already loaded) and the drift `Reference` of the
model version(s) involved; no I/O happens here, so the whole analysis is tested with frames built in
the test. Three questions are answered:

1. **Feature drift** — each feature of the champion's reference against the window's *served* rows
   (exactly one row per request in both split and shadow mode): PSI on the stored reference bins and,
   for numeric features, a KS test; KS p-values are corrected across features as one family.
2. **Score drift per arm** — each arm's scores (rows of the version its alias points at) against the
   scores in *that version's* reference.
3. **Arm vs arm** — the champion's and the challenger's scores in the same window, on the champion
   reference's score bins: an early warning that the two models disagree on live traffic.

A feature or arm with fewer than ``policy.min_rows`` values is "insufficient data", never drift; the
overall severity is the worst of features and per-arm scores with enough data (arm vs arm is reported
on its own: two different models are expected to differ somewhat).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

import numpy as np
import numpy.typing as npt
import pandas as pd

from drift_service.stats import (
    ALPHA,
    EPSILON,
    PSI_MODERATE,
    PSI_SEVERE,
    Correction,
    KsResult,
    PsiResult,
    Severity,
    SortedSample,
    combined_severity,
    correct,
    ks,
    psi_categorical,
    psi_numeric,
    worst,
)
from kingmaker.logs import feature_column
from kingmaker.reference import SCORE_COLUMN, Reference
from kingmaker.roles import Arm

#: Window columns the analysis reads besides the ``feat_*`` columns.
WINDOW_COLUMNS = ("request_id", "ts", "arm", "served", "model_version", "score")


@dataclass(frozen=True)
class Policy:
    """Thresholds of the drift analysis."""

    psi_moderate: float = PSI_MODERATE  # PSI from which a feature has drifted (moderate)
    psi_severe: float = PSI_SEVERE  # PSI from which drift is severe on its own
    alpha: float = ALPHA  # significance level of the (corrected) KS tests
    correction: Correction = Correction.BH  # multiple-testing correction across features
    min_rows: int = 1000  # fewer values than this -> insufficient data, never drift
    epsilon: float = EPSILON  # share substituted for empty PSI bins
    histogram_bins: int = 30  # bins of the report's equal-width histograms

    def __post_init__(self) -> None:
        if not 0 < self.psi_moderate <= self.psi_severe:
            raise ValueError("need 0 < psi_moderate <= psi_severe")
        if not 0 < self.alpha < 1:
            raise ValueError("alpha must be in (0, 1)")
        if self.min_rows < 1:
            raise ValueError("min_rows must be at least 1")


class FeatureKind(StrEnum):
    NUMERIC = "numeric"
    CATEGORICAL = "categorical"


@dataclass(frozen=True)
class Window:
    """Rows of the prediction log in the analysed window (columns `WINDOW_COLUMNS` + ``feat_*``)."""

    frame: pd.DataFrame
    since: datetime | None
    until: datetime | None
    source: str  # where the rows came from (log URL), for the report


@dataclass(frozen=True)
class ArmReference:
    """One arm to analyse: the version its alias points at, and that version's reference (if known)."""

    arm: Arm
    model_version: str | None  # None: take all rows of the arm, whatever their version
    reference: Reference | None  # None: no score drift for this arm (still in arm vs arm)


@dataclass(frozen=True)
class Histogram:
    """Equal-width histogram of reference and current values for the report (shares per bin)."""

    edges: tuple[float, ...]
    reference: tuple[float, ...]
    current: tuple[float, ...]


@dataclass(frozen=True)
class FeatureDrift:
    name: str
    kind: FeatureKind
    n_reference: int
    n_current: int
    n_missing: int  # NaN/None values in the window (dropped)
    psi: PsiResult | None  # None when there was not enough data
    ks: KsResult | None  # None for categorical features or not enough data
    severity: Severity
    histogram: Histogram | None

    @property
    def drifted(self) -> bool:
        return self.severity.level >= Severity.MODERATE.level


@dataclass(frozen=True)
class ScoreDrift:
    """One arm's scores in the window against the scores of its version's reference."""

    arm: Arm
    model_version: str | None
    n_reference: int
    n_current: int
    psi: PsiResult | None
    ks: KsResult | None
    severity: Severity
    histogram: Histogram | None


@dataclass(frozen=True)
class ArmComparison:
    """Champion scores against challenger scores in the same window (champion reference bins)."""

    champion_version: str | None
    challenger_version: str | None
    n_champion: int
    n_challenger: int
    psi: PsiResult | None
    ks: KsResult | None
    severity: Severity
    histogram: Histogram | None


@dataclass(frozen=True)
class DriftResult:
    features: tuple[FeatureDrift, ...]
    scores: tuple[ScoreDrift, ...]
    arms: ArmComparison | None
    rows: int  # served rows (= requests) in the window
    rows_by_arm: Mapping[str, int]  # all rows per arm, served or shadow
    severity: Severity
    policy: Policy

    @property
    def drifted_features(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features if f.drifted)


def analyse(window: Window, champion: Reference, arms: Sequence[ArmReference], policy: Policy, *,
            categorical: frozenset[str] = frozenset(), workers: int | None = None) -> DriftResult:
    """Feature drift, per-arm score drift and arm-vs-arm score drift of one window."""
    frame = window.frame
    served = frame["served"].to_numpy(dtype=bool) if not frame.empty else np.zeros(0, dtype=bool)
    n_served = int(served.sum())
    workers = workers or min(4, os.cpu_count() or 1)
    enough = n_served >= policy.min_rows

    def one(name: str) -> FeatureDrift:
        column = feature_column(name)
        current = frame[column].to_numpy()[served] if column in frame else np.zeros(0)
        return _feature(name, champion.sample[name].to_numpy(), current, champion.edges.get(name, []),
                        FeatureKind.CATEGORICAL if name in categorical else FeatureKind.NUMERIC,
                        policy, enough)

    with ThreadPoolExecutor(max_workers=workers) as pool:  # numpy sorts release the GIL
        raw = list(pool.map(one, champion.features))
    features = _with_corrected_ks(raw, policy)

    arm_rows = {a.arm: _arm_scores(frame, a) for a in arms}
    scores = tuple(_score_drift(a, arm_rows[a.arm], policy) for a in arms if a.reference is not None)
    arms_cmp = _arm_comparison(arms, arm_rows, champion, policy)
    overall = worst([*(f.severity for f in features), *(s.severity for s in scores)]) if enough \
        else Severity.INSUFFICIENT_DATA
    rows_by_arm = {str(k): int(v) for k, v in frame["arm"].value_counts().items()} if not frame.empty else {}
    return DriftResult(features=tuple(features), scores=scores, arms=arms_cmp, rows=n_served,
                       rows_by_arm=rows_by_arm, severity=overall, policy=policy)


def _feature(name: str, reference: npt.NDArray[np.generic], current: npt.NDArray[np.generic],
             edges: Sequence[float], kind: FeatureKind, policy: Policy, enough: bool) -> FeatureDrift:
    if kind is FeatureKind.CATEGORICAL:
        missing = int(pd.isna(current).sum())
        n_cur, n_ref = current.size - missing, int((~pd.isna(reference)).sum())
        if not enough or n_cur < policy.min_rows or n_ref == 0:
            return FeatureDrift(name, kind, n_ref, n_cur, missing, None, None, Severity.INSUFFICIENT_DATA, None)
        p = psi_categorical(reference, current, threshold=policy.psi_moderate,
                            severe_threshold=policy.psi_severe, epsilon=policy.epsilon)
        return FeatureDrift(name, kind, n_ref, n_cur, missing, p, None, combined_severity(p), None)
    cur = SortedSample.of(np.asarray(current, dtype=np.float64))
    ref = SortedSample.of(np.asarray(reference, dtype=np.float64))
    missing = int(current.size) - len(cur)
    if not enough or len(cur) < policy.min_rows or len(ref) == 0:
        return FeatureDrift(name, kind, len(ref), len(cur), missing, None, None, Severity.INSUFFICIENT_DATA, None)
    p, k = _psi_ks(ref, cur, edges, policy)
    return FeatureDrift(name, kind, len(ref), len(cur), missing, p, k, Severity.NONE,
                        histogram(ref, cur, policy.histogram_bins))


def _psi_ks(ref: SortedSample, cur: SortedSample, edges: Sequence[float],
            policy: Policy) -> tuple[PsiResult, KsResult]:
    p = psi_numeric(ref, cur, edges=edges, threshold=policy.psi_moderate, severe_threshold=policy.psi_severe,
                    epsilon=policy.epsilon)
    return p, ks(ref, cur, threshold=policy.alpha)


def _with_corrected_ks(features: list[FeatureDrift], policy: Policy) -> list[FeatureDrift]:
    """Correct the KS p-values of all tested features as one family, then set each severity."""
    tested = [(i, f.ks) for i, f in enumerate(features) if f.ks is not None]
    adjusted = correct([k for _, k in tested], policy.correction)
    out = list(features)
    for (i, _), k in zip(tested, adjusted, strict=True):
        out[i] = replace(out[i], ks=k)
    return [replace(f, severity=combined_severity(f.psi, f.ks))
            if f.psi is not None and f.kind is FeatureKind.NUMERIC else f for f in out]


def _arm_scores(frame: pd.DataFrame, arm: ArmReference) -> SortedSample:
    if frame.empty:
        return SortedSample.of(np.zeros(0))
    mask = frame["arm"].to_numpy() == arm.arm.value
    if arm.model_version is not None:
        mask &= frame["model_version"].astype(str).to_numpy() == str(arm.model_version)
    return SortedSample.of(frame["score"].to_numpy(dtype=np.float64)[mask])


def _score_drift(arm: ArmReference, current: SortedSample, policy: Policy) -> ScoreDrift:
    assert arm.reference is not None
    ref = SortedSample.of(arm.reference.sample[SCORE_COLUMN].to_numpy(dtype=np.float64))
    if len(current) < policy.min_rows or len(ref) == 0:
        return ScoreDrift(arm.arm, arm.model_version, len(ref), len(current), None, None,
                          Severity.INSUFFICIENT_DATA, None)
    p, k = _psi_ks(ref, current, arm.reference.edges.get(SCORE_COLUMN, []), policy)
    return ScoreDrift(arm.arm, arm.model_version, len(ref), len(current), p, k, combined_severity(p, k),
                      histogram(ref, current, policy.histogram_bins))


def _arm_comparison(arms: Sequence[ArmReference], rows: Mapping[Arm, SortedSample], champion: Reference,
                    policy: Policy) -> ArmComparison | None:
    by_arm = {a.arm: a for a in arms}
    if Arm.CHAMPION not in by_arm or Arm.CHALLENGER not in by_arm:
        return None
    champ, chall = rows[Arm.CHAMPION], rows[Arm.CHALLENGER]
    versions = by_arm[Arm.CHAMPION].model_version, by_arm[Arm.CHALLENGER].model_version
    if min(len(champ), len(chall)) < policy.min_rows:
        return ArmComparison(*versions, len(champ), len(chall), None, None, Severity.INSUFFICIENT_DATA, None)
    p, k = _psi_ks(champ, chall, champion.edges.get(SCORE_COLUMN, []), policy)
    return ArmComparison(*versions, len(champ), len(chall), p, k, combined_severity(p, k),
                         histogram(champ, chall, policy.histogram_bins))


def histogram(reference: SortedSample, current: SortedSample, bins: int) -> Histogram:
    """Shares of both samples in ``bins`` equal-width bins over their common 0.5%–99.5% range.

    Values beyond the range are counted in the outer bins, so the shares always sum to one.
    """
    lo = min(_quantile(reference, 0.005), _quantile(current, 0.005))
    hi = max(_quantile(reference, 0.995), _quantile(current, 0.995))
    if not hi > lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    inner = edges[1:-1]

    def shares(s: SortedSample) -> tuple[float, ...]:
        below = np.searchsorted(s.values, inner, side="left")
        counts = np.diff(np.concatenate(([0], below, [len(s)])))
        return tuple(float(v) for v in counts / max(len(s), 1))

    return Histogram(edges=tuple(float(e) for e in edges), reference=shares(reference), current=shares(current))


def _quantile(s: SortedSample, q: float) -> float:
    finite = s.values[np.isfinite(s.values)]
    return float(finite[min(int(q * finite.size), finite.size - 1)]) if finite.size else 0.0
