"""The sign model's frontier (k8s.frontier): hand-computed cases and a simulation of real tests inside it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from k8s.frontier import best_sign_test, constant_bet_power, labels_for_power, power_bound, z_power


@pytest.mark.parametrize("mu", [5.0, 9.0])
def test_when_every_discordant_fraud_is_a_win_the_z_test_needs_three_and_a_valid_test_five(mu: float) -> None:
    # z = sqrt(D) at D straight wins: sqrt(3) = 1.73 >= 1.645 > sqrt(2)
    assert z_power(mu, 1.0) == pytest.approx(stats.poisson.sf(2, mu), abs=1e-9)
    # four straight wins have probability 1/16 > 0.05 under a fair coin, five 1/32: a bet of 0.9 rejects at five
    # (1.9^4 = 13 < 20 <= 1.9^5 = 25); the best randomised test rejects at four with probability p, where
    # p/16 + (1 - p)/32 = 0.05: p = 0.6
    assert constant_bet_power(mu, 1.0, 0.9) == pytest.approx(stats.poisson.sf(4, mu), abs=1e-9)
    assert power_bound(mu, 1.0) == pytest.approx(0.6 * stats.poisson.sf(3, mu) + 0.4 * stats.poisson.sf(4, mu),
                                                 abs=1e-5)


def test_when_every_discordant_fraud_is_a_win_the_best_test_that_does_not_randomise_needs_five() -> None:
    power, rejected = best_sign_test(6.0, 1.0)
    assert power == pytest.approx(stats.poisson.sf(4, 6.0), abs=1e-9)
    assert rejected[(5, 0)] == 1
    assert power < power_bound(6.0, 1.0) - 0.05  # here only randomising reaches four wins


def test_on_the_sparse_real_cell_the_best_test_that_does_not_randomise_nearly_reaches_the_bound() -> None:
    # the 15.6 % shadow cell: 93.7 % of the discordant frauds won; mu where the bound has 80 % power
    q = 0.937
    mu = 8.7046
    assert power_bound(mu, q) == pytest.approx(0.8, abs=1e-4)
    power, rejected = best_sign_test(mu, q)
    # five straight wins; after one loss seven wins for four of the five places it can fall, eight for the fifth
    assert {k: rejected[k] for k in [(5, 0), (7, 1), (8, 1)]} == {(5, 0): 1, (7, 1): 4, (8, 1): 1}
    level = sum(r * 0.5 ** (w + lost) for (w, lost), r in rejected.items())
    assert 1 / 32 + 4 / 256 + 1 / 512 < level <= 0.05
    by_hand = sum(r * q ** w * (1 - q) ** lost * stats.poisson.sf(w + lost - 1, mu)
                  for (w, lost), r in rejected.items())
    assert power == pytest.approx(by_hand, abs=1e-9)
    assert 0.795 < power <= power_bound(mu, q) + 1e-6
    assert power > constant_bet_power(mu, q, 0.9) + 0.05


def test_with_few_discordant_frauds_expected_the_bound_spends_alpha_on_three_straight_wins() -> None:
    # at mu = 2, P(D >= d) 2^d is largest at d = 3 (2.59 vs 2.29 at four): reject there with probability 0.4
    assert power_bound(2.0, 1.0) == pytest.approx(0.4 * stats.poisson.sf(2, 2.0), abs=1e-5)


def test_at_alpha_ten_percent_four_straight_wins_are_enough() -> None:
    assert constant_bet_power(5.0, 1.0, 0.9, alpha=0.1) == pytest.approx(stats.poisson.sf(3, 5.0), abs=1e-9)


@pytest.mark.parametrize("mu", [3.0, 20.0])
def test_an_equal_challenger_is_promoted_at_most_alpha_of_the_time(mu: float) -> None:
    assert constant_bet_power(mu, 0.5, 0.9) <= 0.05
    assert power_bound(mu, 0.5) == pytest.approx(0.05, abs=1e-3)  # all of alpha, nothing more


def _simulated_power(mu: float, q: float, bet: float | None, runs: int = 40_000) -> tuple[float, float]:
    """Power (and its standard error) of a constant bet's test (or, with ``bet`` None, the one-look z-test) on
    sign sequences: ``D ~ Poisson(mu)`` discordant frauds, each a win with probability ``q``."""
    rng = np.random.default_rng(3)
    d = rng.poisson(mu, runs)
    longest = int(d.max())
    signs = np.where(rng.random((runs, longest)) < q, 1.0, -1.0) * (np.arange(longest) < d[:, None])
    if bet is None:
        total, count = signs.sum(axis=1), np.abs(signs).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            hit = np.where(count > 0, total / np.sqrt(count), 0.0) >= stats.norm.isf(0.05)
    else:
        hit = np.cumsum(np.log1p(bet * signs), axis=1).max(axis=1) >= math.log(20)
    p = float(hit.mean())
    return p, math.sqrt(p * (1 - p) / runs)


@pytest.mark.parametrize("bet", [0.5, 0.9, 0.99])
def test_the_exact_powers_match_a_simulation_and_stay_under_the_bound(bet: float) -> None:
    mu, q = 6.0, 0.944  # the real data's 15.6 % cell near the z-test's 80 % power point
    z, z_se = _simulated_power(mu, q, None)
    assert z_power(mu, q) == pytest.approx(z, abs=4 * z_se)
    power, se = _simulated_power(mu, q, bet)
    assert constant_bet_power(mu, q, bet) == pytest.approx(power, abs=4 * se)
    assert power < power_bound(mu, q) < z  # no valid test reaches the one-look z-test's power here


def test_labels_for_power_solves_for_the_expected_discordant_frauds() -> None:
    rate = 1e-4  # one discordant fraud per 10,000 labels, all won
    labels = labels_for_power(rate, 1.0, (0.3, 0.9))
    # P(Poisson(mu) >= 3) = 0.8 at mu = 4.2790 (z-test); P(Poisson(mu) >= 5) = 0.8 at mu = 6.7210 (bet 0.9: five
    # straight wins; 0.3 needs nine)
    assert labels.z_test == pytest.approx(42_790, rel=1e-3)
    assert (labels.constant_bet, labels.bet) == (pytest.approx(67_210, rel=1e-3), 0.9)
    assert labels.z_test < labels.any_test < labels.constant_bet  # type: ignore[operator]
    equal = labels_for_power(1e-4, 0.5, (0.9,))  # an equal challenger: 80 % power is never reached
    assert (equal.z_test, equal.constant_bet, equal.bet, equal.any_test) == (None, None, None, None)
