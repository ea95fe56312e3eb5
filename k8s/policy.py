"""The promotion policy: what "the challenger wins" means, typed and validated.

`parse_policy` turns ``spec.policy`` of a ``ChampionChallenger`` resource (a plain dict, camelCase keys
as in the CRD) into a frozen `Policy`. Every Python field ``snake_case`` is the CRD key ``snakeCase``
(`crd_key`); a unit test keeps the two in step with ``k8s/crd/championchallenger.yaml``. A bad value
raises `PermanentError` with one readable line naming the key, e.g.
``policy.alertRate: must be > 0 and < 1, got 1.5``.

The defaults of the cost matrix, the alert rate and the FPR are the deployment objective's
(`kingmaker.objective.DEFAULT`), the same that training registers its operating point with.

Pure: no Kubernetes, MLflow or HTTP imports.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, TypeVar

from kingmaker.errors import PermanentError
from kingmaker.objective import DEFAULT as OBJECTIVE
from kingmaker.objective import DEFAULT_ALERT_RATE

E = TypeVar("E", bound=StrEnum)


class Criterion(StrEnum):
    """The primary comparison between the arms."""

    EXPECTED_COST = "expected-cost"  # cost per 1,000 transactions, both arms alerting on the same share
    PR_AUC = "pr-auc"  # average precision
    RECALL_AT_FPR = "recall-at-fpr"  # recall with each arm's threshold set for the same false-positive rate


class Approval(StrEnum):
    """Who performs a promotion the statistics support."""

    AUTOMATIC = "automatic"  # the controller promotes on its own
    MANUAL = "manual"  # the controller waits for `kingmaker promote --approve` (spec.approvedChallengerVersion)


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True)
class CostMatrix:
    """What an alert and a missed fraud cost (currency units); a caught fraud costs its review only."""

    review_cost: float = field(default=OBJECTIVE.review_cost, metadata=_doc("cost of reviewing one alert (true or false)"))
    missed_fraud_cost: float = field(
        default=OBJECTIVE.missed_fraud_cost, metadata=_doc("cost of one missed fraud when its amount is not used or not logged"))
    amount_feature: str | None = field(
        default=None, metadata=_doc("feature holding the transaction amount; a missed fraud then costs its amount"))
    amount_cap: float | None = field(
        default=None, metadata=_doc("amounts are clipped here so the cost per transaction stays bounded "
                                    "(required with amountFeature)"))

    @property
    def bound(self) -> float:
        """The largest cost one transaction can have: the statistic is normalised by it."""
        missed = max(self.missed_fraud_cost, self.amount_cap or 0.0) if self.amount_feature else self.missed_fraud_cost
        return max(self.review_cost, missed)


@dataclass(frozen=True)
class Guardrails:
    """Breaching any of these rolls the challenger back."""

    max_error_rate: float = field(default=0.01, metadata=_doc("challenger's share of failed requests"))
    max_p99_latency_seconds: float = field(default=0.25, metadata=_doc("challenger's p99 latency"))
    max_score_psi: float = field(default=0.25, metadata=_doc("PSI between the two arms' score distributions"))


@dataclass(frozen=True)
class Policy:
    """When the challenger has won, when it has lost, and how often to look."""

    criterion: Criterion = field(default=Criterion.EXPECTED_COST, metadata=_doc("primary comparison"))
    alert_rate: float = field(
        default=DEFAULT_ALERT_RATE, metadata=_doc("expected-cost: share of traffic each arm flags (matched alert rate)"))
    fpr: float = field(default=OBJECTIVE.fpr, metadata=_doc("recall-at-fpr: false-positive rate each arm is held to"))
    horizon_per_arm: int = field(
        default=50_000, metadata=_doc("pr-auc: labelled samples per arm at the last planned analysis"))
    planned_analyses: int = field(
        default=10, metadata=_doc("pr-auc: number of equally spaced O'Brien-Fleming analyses"))
    planned_labels: int | None = field(
        default=None, metadata=_doc("expected-cost and recall: the labelled transactions a fixed-horizon test would "
                                    "need for the smallest effect worth detecting (a power calculation's n, at 80% "
                                    "power and the policy's alpha); the sequential test then bets mostly for that "
                                    "horizon and needed 1.3-1.6x it, an unplanned one 1.6-1.8x (bench promotion); "
                                    "unset: bets spread evenly from 1k to 256k"))
    cost: CostMatrix = field(default_factory=CostMatrix, metadata=_doc("the cost matrix"))
    label_delay_seconds: int = field(
        default=7 * 24 * 3600, metadata=_doc("a transaction counts once this old; later labels are ignored"))
    min_labelled_per_arm: int = field(
        default=1000, metadata=_doc("matured labelled transactions each arm needs before any verdict"))
    min_positives_per_arm: int = field(default=20, metadata=_doc("matured frauds each arm needs"))
    alpha: float = field(default=0.05, metadata=_doc("chance of a false promotion over the whole experiment"))
    guardrails: Guardrails = field(default_factory=Guardrails, metadata=_doc("rollback thresholds"))
    approval: Approval = field(default=Approval.AUTOMATIC, metadata=_doc("automatic or manual promotion"))
    evaluation_interval_seconds: int = field(default=300, metadata=_doc("time between two evaluations"))


def crd_key(name: str) -> str:
    """``max_p99_latency_seconds`` -> ``maxP99LatencySeconds``: the CRD spelling of a field name."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


# --- parsing ----------------------------------------------------------------------------------

def _fail(path: str, message: str) -> PermanentError:
    return PermanentError(f"{path}: {message}")


def _number(path: str, value: Any, *, low: float | None = None, high: float | None = None,
            low_open: bool = False, high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(path, f"must be a finite number, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise _fail(path, f"must be {'>' if low_open else '>='} {low:g}, got {value!r}")
    if high is not None and (value > high or (high_open and value == high)):
        raise _fail(path, f"must be {'<' if high_open else '<='} {high:g}, got {value!r}")
    return float(value)


def _integer(path: str, value: Any, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, f"must be an integer, got {value!r}")
    if value < low:
        raise _fail(path, f"must be >= {low}, got {value!r}")
    return value


def _choice(path: str, value: Any, enum: type[E]) -> E:
    allowed = [member.value for member in enum]
    if value not in allowed:
        raise _fail(path, f"must be one of {', '.join(allowed)}, got {value!r}")
    return enum(value)


def _mapping(path: str, value: Any, known: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(path, f"must be a mapping, got {type(value).__name__}")
    for key in value:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(sorted(known))})"
            raise _fail(f"{path}.{key}", f"unknown field{hint}")
    return value


def _keys(cls: type) -> set[str]:
    return {crd_key(f.name) for f in fields(cls)}


def _parse_cost(path: str, raw: Any) -> CostMatrix:
    spec = _mapping(path, raw, _keys(CostMatrix))
    default = CostMatrix()
    feature = spec.get("amountFeature")
    if feature is not None and (not isinstance(feature, str) or not feature):
        raise _fail(f"{path}.amountFeature", f"must be a non-empty string, got {feature!r}")
    cap = spec.get("amountCap")
    cost = CostMatrix(
        review_cost=_number(f"{path}.reviewCost", spec.get("reviewCost", default.review_cost), low=0.0),
        missed_fraud_cost=_number(f"{path}.missedFraudCost", spec.get("missedFraudCost", default.missed_fraud_cost),
                                  low=0.0, low_open=True),
        amount_feature=feature,
        amount_cap=None if cap is None else _number(f"{path}.amountCap", cap, low=0.0, low_open=True),
    )
    if cost.amount_feature is not None and cost.amount_cap is None:
        raise _fail(f"{path}.amountCap", "is required with amountFeature (the test needs a bounded cost)")
    return cost


def _parse_guardrails(path: str, raw: Any) -> Guardrails:
    spec = _mapping(path, raw, _keys(Guardrails))
    default = Guardrails()
    return Guardrails(
        max_error_rate=_number(f"{path}.maxErrorRate", spec.get("maxErrorRate", default.max_error_rate),
                               low=0.0, high=1.0),
        max_p99_latency_seconds=_number(f"{path}.maxP99LatencySeconds",
                                        spec.get("maxP99LatencySeconds", default.max_p99_latency_seconds),
                                        low=0.0, low_open=True),
        max_score_psi=_number(f"{path}.maxScorePsi", spec.get("maxScorePsi", default.max_score_psi),
                              low=0.0, low_open=True),
    )


def parse_policy(raw: Any, *, path: str = "policy") -> Policy:
    """Validate ``spec.policy`` (camelCase keys, defaults for absent ones) into a `Policy`.

    Raises `PermanentError` with one line (``policy.<key>: <what is wrong>``) on the first bad value.
    """
    spec = _mapping(path, {} if raw is None else raw, _keys(Policy))
    d = Policy()

    def get(key: str, default: Any) -> Any:
        return spec.get(key, default)

    return Policy(
        criterion=_choice(f"{path}.criterion", get("criterion", d.criterion.value), Criterion),
        alert_rate=_number(f"{path}.alertRate", get("alertRate", d.alert_rate), low=0.0, high=1.0,
                           low_open=True, high_open=True),
        fpr=_number(f"{path}.fpr", get("fpr", d.fpr), low=0.0, high=1.0, low_open=True, high_open=True),
        horizon_per_arm=_integer(f"{path}.horizonPerArm", get("horizonPerArm", d.horizon_per_arm), low=100),
        planned_analyses=_integer(f"{path}.plannedAnalyses", get("plannedAnalyses", d.planned_analyses), low=1),
        planned_labels=(None if get("plannedLabels", None) is None
                        else _integer(f"{path}.plannedLabels", get("plannedLabels", None), low=100)),
        cost=_parse_cost(f"{path}.cost", get("cost", {})),
        label_delay_seconds=_integer(f"{path}.labelDelaySeconds", get("labelDelaySeconds", d.label_delay_seconds),
                                     low=0),
        min_labelled_per_arm=_integer(f"{path}.minLabelledPerArm",
                                      get("minLabelledPerArm", d.min_labelled_per_arm), low=1),
        min_positives_per_arm=_integer(f"{path}.minPositivesPerArm",
                                       get("minPositivesPerArm", d.min_positives_per_arm), low=1),
        alpha=_number(f"{path}.alpha", get("alpha", d.alpha), low=0.0, high=0.5, low_open=True),
        guardrails=_parse_guardrails(f"{path}.guardrails", get("guardrails", {})),
        approval=_choice(f"{path}.approval", get("approval", d.approval.value), Approval),
        evaluation_interval_seconds=_integer(f"{path}.evaluationIntervalSeconds",
                                             get("evaluationIntervalSeconds", d.evaluation_interval_seconds), low=10),
    )
