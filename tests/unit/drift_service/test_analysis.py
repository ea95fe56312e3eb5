"""The analysis of one window: which rows feed which comparison, and what it reports."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from drift_service.analysis import ArmReference, FeatureKind, Policy, Window, analyse
from drift_service.stats import Severity, adjust_pvalues
from kingmaker import reference
from kingmaker.roles import Arm

from .conftest import WindowFactory, log_rows, make_reference, normal_frame


def _window(*frames: pd.DataFrame) -> Window:
    return Window(frame=pd.concat(frames, ignore_index=True), since=None, until=None, source="memory")


def test_features_use_served_rows_only() -> None:
    """Shadow rows repeat the served request's features: counting them twice would bias nothing here,
    but rows that were never served (here deliberately shifted) must not count at all."""
    ref = make_reference(normal_frame(5000, seed=1))
    served = log_rows(normal_frame(3000, seed=2), arm="champion", served=True, id_prefix="a")
    shadow = log_rows(normal_frame(3000, seed=3, shift={0: 2.0, 1: 2.0}), arm="challenger", served=False,
                      version="2", id_prefix="b")
    result = analyse(_window(served, shadow), ref, [ArmReference(Arm.CHAMPION, "1", ref)], Policy())
    assert result.rows == 3000
    assert result.rows_by_arm == {"champion": 3000, "challenger": 3000}
    assert all(f.n_current == 3000 for f in result.features)
    # the unserved rows are shifted by 2 SD: counted, they would give PSI far above 0.25
    assert all(f.psi is not None and f.psi.score < 0.05 for f in result.features)
    assert all(f.severity is not Severity.SEVERE for f in result.features)


def test_score_drift_per_arm_uses_that_arms_version_and_reference() -> None:
    rng = np.random.default_rng(0)
    x = normal_frame(4000, seed=4)
    champ_ref = make_reference(x, scores=rng.beta(1, 20, 4000))
    chall_ref = make_reference(x, scores=rng.beta(5, 5, 4000))  # the challenger scores differently
    champ = log_rows(x.iloc[:2000], arm="champion", version="1", scores=rng.beta(1, 20, 2000), id_prefix="a")
    old = log_rows(x.iloc[:2000], arm="champion", version="0", scores=rng.beta(9, 1, 2000), id_prefix="o")
    chall = log_rows(x.iloc[2000:], arm="challenger", version="2", scores=rng.beta(5, 5, 2000), id_prefix="b")
    arms = [ArmReference(Arm.CHAMPION, "1", champ_ref), ArmReference(Arm.CHALLENGER, "2", chall_ref)]
    result = analyse(_window(champ, old, chall), champ_ref, arms, Policy())
    by_arm = {s.arm: s for s in result.scores}
    assert by_arm[Arm.CHAMPION].n_current == 2000  # version 0 rows (scores near 1) ignored
    for arm in (Arm.CHAMPION, Arm.CHALLENGER):  # each compared with its own reference
        arm_psi = by_arm[arm].psi
        assert arm_psi is not None and arm_psi.score < 0.05
        assert by_arm[arm].severity is not Severity.SEVERE
    assert result.arms is not None
    assert (result.arms.champion_version, result.arms.challenger_version) == ("1", "2")
    assert result.arms.severity is Severity.SEVERE  # the two models disagree on live traffic
    assert result.arms.psi is not None and result.arms.psi.score > 0.25


def test_arm_comparison_is_quiet_when_both_arms_score_alike() -> None:
    """Same score distribution on both arms: never severe, and the single KS test (α = 0.05, not
    corrected) flags moderate only about 5% of the time."""
    severities = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        x = normal_frame(6000, seed=seed)
        ref = make_reference(x)
        champ = log_rows(x.iloc[:3000], arm="champion", version="1", scores=rng.beta(1, 20, 3000), id_prefix="a")
        chall = log_rows(x.iloc[3000:], arm="challenger", version="2", scores=rng.beta(1, 20, 3000), id_prefix="b")
        arms = [ArmReference(Arm.CHAMPION, "1", ref), ArmReference(Arm.CHALLENGER, "2", None)]
        result = analyse(_window(champ, chall), ref, arms, Policy())
        assert result.arms is not None and result.arms.psi is not None
        assert result.arms.psi.score < 0.05
        severities.append(result.arms.severity)
        assert [s.arm for s in result.scores] == [Arm.CHAMPION]  # no challenger reference: no score drift
    assert Severity.SEVERE not in severities
    assert severities.count(Severity.MODERATE) <= 3, severities


def test_arm_comparison_needs_enough_rows_on_both_sides(window_of: WindowFactory) -> None:
    x = normal_frame(3000, seed=6)
    ref = make_reference(x)
    arms = [ArmReference(Arm.CHAMPION, "1", ref), ArmReference(Arm.CHALLENGER, "2", None)]
    result = analyse(window_of(x, arm=["champion"] * 2500 + ["challenger"] * 500,
                               version=["1"] * 2500 + ["2"] * 500), ref, arms, Policy(min_rows=1000))
    assert result.arms is not None and result.arms.severity is Severity.INSUFFICIENT_DATA
    assert result.arms.psi is None
    assert result.severity is not Severity.INSUFFICIENT_DATA  # the features had enough
    only_champion = analyse(window_of(x), ref, [ArmReference(Arm.CHAMPION, "1", ref)], Policy())
    assert only_champion.arms is None


def test_ks_pvalues_are_corrected_across_features(window_of: WindowFactory) -> None:
    ref = make_reference(normal_frame(3000, seed=7))
    result = analyse(window_of(normal_frame(2000, seed=8, shift={2: 0.08})), ref,
                     [ArmReference(Arm.CHAMPION, None, ref)], Policy())
    raw = [f.ks.p_value for f in result.features if f.ks is not None]
    adjusted = [f.ks.p_adjusted for f in result.features if f.ks is not None]
    assert len(raw) == 6
    assert adjusted == pytest.approx(adjust_pvalues(raw).tolist(), abs=1e-12)


def test_categorical_feature_counts_unseen_categories(window_of: WindowFactory) -> None:
    rng = np.random.default_rng(9)
    train = pd.DataFrame({"channel": rng.integers(0, 3, 4000).astype(float), "x": rng.normal(size=4000)})
    live = pd.DataFrame({"channel": np.where(rng.random(2000) < 0.3, 7.0, rng.integers(0, 3, 2000)),
                         "x": rng.normal(size=2000)})
    ref = make_reference(train)
    result = analyse(window_of(live), ref, [ArmReference(Arm.CHAMPION, None, ref)], Policy(),
                     categorical=frozenset({"channel"}))
    channel = next(f for f in result.features if f.name == "channel")
    assert channel.kind is FeatureKind.CATEGORICAL
    assert channel.ks is None and channel.psi is not None
    assert channel.psi.bins == ("0.0", "1.0", "2.0", "<unseen>")
    assert channel.psi.current_share[-1] == pytest.approx(0.3, abs=0.03)
    assert channel.severity is Severity.SEVERE
    x = next(f for f in result.features if f.name == "x")
    assert x.kind is FeatureKind.NUMERIC and x.psi is not None and x.psi.score < 0.05


def test_a_binary_numeric_feature_is_binned_per_value(window_of: WindowFactory) -> None:
    """5 % ones in training, 20 % live. Quantile bins merge into one edge (all deciles are 0), so the old
    PSI was 0. Per value: (0.80 - 0.95) ln(0.80 / 0.95) + (0.20 - 0.05) ln(0.20 / 0.05) = 0.0258 + 0.2079
    = 0.2337 (the unseen-value bin is empty in both samples: 0); moderate on its own, severe with KS."""
    n_ref, n_cur = 4000, 2000
    train = pd.DataFrame({"flag": (np.arange(n_ref) % 20 == 0).astype(float), "x": np.linspace(-2, 2, n_ref)})
    live = pd.DataFrame({"flag": (np.arange(n_cur) % 5 == 0).astype(float), "x": np.linspace(-2, 2, n_cur)})
    ref = make_reference(train)
    result = analyse(window_of(live), ref, [ArmReference(Arm.CHAMPION, None, ref)], Policy())
    flag = next(f for f in result.features if f.name == "flag")
    assert flag.kind is FeatureKind.NUMERIC and flag.psi is not None and flag.ks is not None
    assert flag.psi.bins == ("0.0", "1.0", "<unseen>")
    hand = (0.80 - 0.95) * np.log(0.80 / 0.95) + (0.20 - 0.05) * np.log(0.20 / 0.05)
    assert flag.psi.score == pytest.approx(hand, abs=1e-12) == pytest.approx(0.2337, abs=1e-4)
    assert flag.severity is Severity.SEVERE  # PSI >= 0.1 confirmed by KS
    assert reference.quantile_edges(train["flag"]) == [0.0]  # what the old binning had to work with


def test_numeric_features_with_more_than_ten_values_keep_quantile_bins() -> None:
    from drift_service.stats import LOW_CARDINALITY, psi_numeric

    eleven = np.arange(1100) % (LOW_CARDINALITY + 1)
    ten = np.arange(1000) % LOW_CARDINALITY
    edges = reference.quantile_edges(eleven)
    assert len(psi_numeric(eleven, eleven, edges=edges).bins) == len(edges) + 1
    assert psi_numeric(ten, ten, edges=reference.quantile_edges(ten)).bins[-1] == "<unseen>"
    unseen = psi_numeric(ten, np.full(1000, 42.0), edges=[])
    assert unseen.current_share[-1] == 1.0  # a value never seen in training counts in the unseen bin


def test_missing_values_are_counted_and_dropped(window_of: WindowFactory) -> None:
    x = normal_frame(2000, features=2, seed=10)
    x.loc[:499, "x0"] = np.nan
    ref = make_reference(normal_frame(3000, features=2, seed=11))
    result = analyse(window_of(x), ref, [ArmReference(Arm.CHAMPION, None, ref)], Policy(min_rows=1000))
    x0 = result.features[0]
    assert (x0.n_current, x0.n_missing) == (1500, 500)
    assert x0.psi is not None and x0.psi.n_current == 1500
    assert x0.ks is not None and x0.ks.n_current == 1500
    few = analyse(window_of(x), ref, [ArmReference(Arm.CHAMPION, None, ref)], Policy(min_rows=1600))
    assert few.features[0].severity is Severity.INSUFFICIENT_DATA  # too few non-missing values
    assert few.features[1].psi is not None  # 2000 values: enough


def test_feature_missing_from_the_window_is_insufficient_data(window_of: WindowFactory) -> None:
    ref = make_reference(normal_frame(3000, features=2, seed=12))
    frame = log_rows(normal_frame(2000, features=2, seed=13)).drop(columns=["feat_x1"])
    result = analyse(Window(frame, None, None, "memory"), ref, [ArmReference(Arm.CHAMPION, None, ref)], Policy())
    assert result.features[0].psi is not None and result.features[0].n_current == 2000
    assert result.features[1].severity is Severity.INSUFFICIENT_DATA and result.features[1].psi is None


def test_histograms_hold_shares_of_both_samples(window_of: WindowFactory) -> None:
    ref = make_reference(normal_frame(3000, features=1, seed=14))
    result = analyse(window_of(normal_frame(2000, features=1, seed=15, shift={0: 5.0})), ref,
                     [ArmReference(Arm.CHAMPION, None, ref)], Policy(histogram_bins=20))
    h = result.features[0].histogram
    assert h is not None and len(h.edges) == 21
    assert sum(h.reference) == pytest.approx(1.0) and sum(h.current) == pytest.approx(1.0)
    assert h.edges[0] < -2 and h.edges[-1] > 7  # the range covers both samples


def test_policy_validates_its_thresholds() -> None:
    with pytest.raises(ValueError):
        Policy(psi_moderate=0.3, psi_severe=0.2)
    with pytest.raises(ValueError):
        Policy(alpha=1.5)
    with pytest.raises(ValueError):
        Policy(min_rows=0)


def test_reference_edges_are_used_not_recomputed(window_of: WindowFactory) -> None:
    """PSI bins come from the stored edges: changing them changes the result."""
    x = normal_frame(3000, features=1, seed=16)
    ref = make_reference(x)
    live = window_of(normal_frame(2000, features=1, seed=17, shift={0: 0.5}))
    stored = analyse(live, ref, [ArmReference(Arm.CHAMPION, None, ref)], Policy()).features[0]
    coarse = reference.Reference(ref.sample, ref.features, {**ref.edges, "x0": [0.0]}, 2)
    two_bins = analyse(live, coarse, [ArmReference(Arm.CHAMPION, None, coarse)], Policy()).features[0]
    assert stored.psi is not None and two_bins.psi is not None
    assert len(stored.psi.bins) == 10 and len(two_bins.psi.bins) == 2
    assert stored.psi.score != pytest.approx(two_bins.psi.score, abs=1e-3)
