"""Seeded simulations on the project's synthetic transactions (`training.data.synthetic`).

- Identical distributions: with the BH correction, "drifted" is raised on at most about α of the
  features, and in at most about α of the windows at all (BH controls the family-wise rate under the
  global null). Without a correction the same windows would alarm about half of the time.
- A 0.5 SD mean shift in two features is severe on exactly those two and not on the others.
- A window below the minimum is "insufficient data", never drift, however large the shift.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from drift_service.analysis import ArmReference, Policy, analyse
from drift_service.stats import Correction, Severity
from kingmaker.roles import Arm
from training.data import synthetic

from .conftest import WindowFactory, make_reference

ALPHA = 0.05
REPS = 120
REF_ROWS, CUR_ROWS = 4000, 2000


@pytest.fixture(scope="module")
def pool() -> tuple[pd.DataFrame, list[str]]:
    """One large draw from the generator, cut into independent windows below."""
    ds = synthetic(rows=REPS * (REF_ROWS + CUR_ROWS), seed=2024)
    return ds.frame[list(ds.features)], list(ds.features)


def _null_runs(pool: tuple[pd.DataFrame, list[str]], window_of: WindowFactory,
               correction: Correction) -> np.ndarray:
    frame, features = pool
    drifted = np.zeros((REPS, len(features)), dtype=bool)
    policy = Policy(alpha=ALPHA, correction=correction)
    for rep in range(REPS):
        start = rep * (REF_ROWS + CUR_ROWS)
        ref = make_reference(frame.iloc[start:start + REF_ROWS].reset_index(drop=True), seed=rep)
        cur = frame.iloc[start + REF_ROWS:start + REF_ROWS + CUR_ROWS].reset_index(drop=True)
        result = analyse(window_of(cur, seed=rep), ref, [ArmReference(Arm.CHAMPION, None, ref)], policy, workers=1)
        drifted[rep] = [f.drifted for f in result.features]
        assert all(f.psi is not None and f.psi.score < policy.psi_moderate for f in result.features)
    return drifted


def test_identical_distributions_rarely_raise_drift_with_bh(pool: tuple[pd.DataFrame, list[str]],
                                                            window_of: WindowFactory) -> None:
    drifted = _null_runs(pool, window_of, Correction.BH)
    per_feature = drifted.mean()
    any_feature = drifted.any(axis=1).mean()
    # binomial(120, 0.05) exceeds 12 windows with probability < 1%
    assert per_feature <= ALPHA, per_feature
    assert any_feature <= 0.10, any_feature


def test_without_correction_the_same_windows_alarm_often(pool: tuple[pd.DataFrame, list[str]],
                                                         window_of: WindowFactory) -> None:
    """The control for the test above: the correction is what keeps windows quiet."""
    drifted = _null_runs(pool, window_of, Correction.NONE)
    assert drifted.mean() == pytest.approx(ALPHA, abs=0.03)  # uncorrected tests are calibrated
    assert drifted.any(axis=1).mean() > 0.25  # 13 features: 1 - 0.95**13 ~ 0.49


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_half_sd_shift_is_severe_on_the_shifted_features_only(seed: int, window_of: WindowFactory) -> None:
    shifted = {"f03": 0.5, "f08": 0.5}
    train = synthetic(rows=20_000, seed=seed)
    live = synthetic(rows=5_000, seed=seed + 100, drift=shifted)
    features = list(train.features)
    ref = make_reference(train.frame[features], seed=seed)
    result = analyse(window_of(live.frame[features], seed=seed), ref, [ArmReference(Arm.CHAMPION, "1", ref)],
                     Policy())
    severity = {f.name: f.severity for f in result.features}
    assert {name for name, s in severity.items() if s is Severity.SEVERE} == set(shifted)
    assert all(severity[name] is Severity.NONE for name in features if name not in shifted
               and name.startswith("f")), severity
    assert result.severity is Severity.SEVERE
    assert set(result.drifted_features) >= set(shifted)
    for name in shifted:  # both signals agree on the shifted features
        f = next(f for f in result.features if f.name == name)
        assert f.psi is not None and f.psi.score >= 0.15
        assert f.ks is not None and f.ks.p_adjusted is not None and f.ks.p_adjusted < 1e-10


def test_small_window_is_insufficient_data_never_drift(window_of: WindowFactory) -> None:
    train = synthetic(rows=5_000, seed=5)
    live = synthetic(rows=300, seed=6, drift={"f01": 3.0, "f02": 3.0})
    features = list(train.features)
    ref = make_reference(train.frame[features])
    result = analyse(window_of(live.frame[features]), ref, [ArmReference(Arm.CHAMPION, "1", ref)],
                     Policy(min_rows=1000))
    assert result.severity is Severity.INSUFFICIENT_DATA
    assert result.drifted_features == ()
    assert all(f.severity is Severity.INSUFFICIENT_DATA and f.psi is None for f in result.features)
    assert all(s.severity is Severity.INSUFFICIENT_DATA for s in result.scores)
    # the same window with a lower minimum does see the shift: the guard is the only reason above
    seen = analyse(window_of(live.frame[features]), ref, [ArmReference(Arm.CHAMPION, "1", ref)],
                   Policy(min_rows=100))
    assert {"f01", "f02"} <= set(seen.drifted_features)
