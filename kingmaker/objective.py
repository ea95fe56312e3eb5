"""The deployment's objective: what a decision costs and how many alerts it may raise. One place, read by
training (the operating point it registers and the cost it reports), the Scorer (through the threshold
registered with the model) and the promotion controller (`k8s.policy` takes its defaults from here).

- **Cost matrix.** Each alert costs ``review_cost`` (a caught fraud costs its review only); each missed fraud
  costs ``missed_fraud_cost``, or, with ``amount_feature``, its amount clipped at ``amount_cap``.
- **Alert rate.** The share of traffic flagged for review. Both arms of an experiment are compared at this
  rate, and training turns it into the deployed model's threshold: a quantile of that model's own scores, so
  the rate carries over although a refit model's scores sit higher than its fold models' (see
  `training.pipeline`). Unset, it is derived from the fraud rate of the training labels (`derive_alert_rate`).
- **FPR.** The false-positive rate of the secondary criterion (recall at a fixed FPR).

The defaults are the policy fixed for the credit-card data before any model was compared on it: review 5,
missed fraud 100 (constant: amounts are not logged in every deployment), alert rate 2x the fraud rate
rounded to one significant digit (0.17% -> 0.35% -> 0.3%, ~1.8 alerts per fraud: at a 2% rate review cost is
~86% of the total and the comparison sees only the few frauds one arm ranks low), FPR 0.1%.

Pure: NumPy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

#: Alerts per fraud the default alert rate allows (2x the fraud rate).
ALERTS_PER_FRAUD = 2.0
#: The credit-card set's fraud rate (492 of 284,807): the data the default policy was fixed for.
CREDIT_CARD_FRAUD_RATE = 492 / 284_807


def derive_alert_rate(fraud_rate: float) -> float:
    """``ALERTS_PER_FRAUD`` x the fraud rate, rounded to one significant digit (0.00345 -> 0.003), in (0, 0.5]."""
    if not 0.0 < fraud_rate < 1.0:
        raise ValueError(f"fraud rate must be in (0, 1), got {fraud_rate}")
    raw = ALERTS_PER_FRAUD * fraud_rate
    digits = -math.floor(math.log10(raw))
    return min(0.5, max(round(raw, digits), 10.0 ** -digits))


@dataclass(frozen=True)
class Objective:
    """What a decision costs (currency units) and the operating point (see the module docstring)."""

    review_cost: float = 5.0
    missed_fraud_cost: float = 100.0
    amount_feature: str | None = None
    amount_cap: float | None = None
    alert_rate: float | None = None  # None: derived from the training labels' fraud rate
    fpr: float = 0.001

    def miss_costs(self, n: int, amounts: npt.ArrayLike | None) -> npt.NDArray[np.float64]:
        """What missing each of ``n`` transactions would cost if it were a fraud."""
        if self.amount_feature is not None and amounts is not None:
            a = np.asarray(amounts, dtype=float)
            return np.minimum(a, self.amount_cap) if self.amount_cap is not None else a
        return np.full(n, self.missed_fraud_cost)

    def row_costs(self, y: npt.ArrayLike, alert: npt.ArrayLike, amounts: npt.ArrayLike | None = None
                  ) -> npt.NDArray[np.float64]:
        """Each transaction's cost: a review when alerted, its miss cost when an unflagged fraud, else 0."""
        yb = np.asarray(y).astype(bool)
        ab = np.asarray(alert).astype(bool)
        return np.where(ab, self.review_cost, np.where(yb, self.miss_costs(len(yb), amounts), 0.0))

    def for_labels(self, y: npt.ArrayLike) -> Objective:
        """This objective with its alert rate set: the stated one, else derived from the labels' fraud rate."""
        if self.alert_rate is not None:
            return self
        return replace(self, alert_rate=derive_alert_rate(float(np.mean(np.asarray(y, dtype=float)))))


#: The default alert rate (0.003) and deployment objective: the credit-card policy above.
DEFAULT_ALERT_RATE = derive_alert_rate(CREDIT_CARD_FRAUD_RATE)
DEFAULT = Objective(alert_rate=DEFAULT_ALERT_RATE)
