"""The deployment objective (`kingmaker.objective`): the default alert rate derived from the fraud rate, costs."""

from __future__ import annotations

import numpy as np
import pytest

from k8s.policy import Policy
from kingmaker.objective import DEFAULT, Objective, derive_alert_rate


@pytest.mark.parametrize(("fraud_rate", "rate"), [
    (492 / 284_807, 0.003),  # the credit-card set: 0.17% fraud -> 0.35% -> 0.3% (the preregistered default)
    (0.02, 0.04), (0.001, 0.002), (0.0049, 0.01), (0.3, 0.5), (1e-5, 2e-5),
])
def test_default_alert_rate_is_twice_the_fraud_rate_to_one_significant_digit(fraud_rate: float, rate: float) -> None:
    assert derive_alert_rate(fraud_rate) == pytest.approx(rate)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1])
def test_a_fraud_rate_outside_0_1_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="fraud rate must be in"):
        derive_alert_rate(bad)


def test_the_controller_reads_its_defaults_from_the_objective() -> None:
    policy = Policy()
    assert DEFAULT.alert_rate == 0.003 and policy.alert_rate == DEFAULT.alert_rate and policy.fpr == DEFAULT.fpr
    assert (policy.cost.review_cost, policy.cost.missed_fraud_cost) == (DEFAULT.review_cost, DEFAULT.missed_fraud_cost)


def test_row_costs_and_the_rate_from_labels() -> None:
    y = np.array([1, 1, 0, 0])
    alert = np.array([True, False, True, False])
    assert Objective().row_costs(y, alert).tolist() == [5.0, 100.0, 5.0, 0.0]
    capped = Objective(amount_feature="Amount", amount_cap=50.0)
    assert capped.row_costs(y, alert, [10.0, 80.0, 1.0, 1.0]).tolist() == [5.0, 50.0, 5.0, 0.0]
    assert Objective().for_labels(np.r_[np.ones(2), np.zeros(998)]).alert_rate == 0.004
    assert Objective(alert_rate=0.01).for_labels(np.r_[np.ones(2), np.zeros(998)]).alert_rate == 0.01
