"""The promotion decision: ``decide(observations, policy, state) -> Decision``. Pure.

Nothing here reads a clock, a file, a cluster, MLflow or Prometheus: the controller's observe step builds
`Observations` (plain values), this module decides, and the act step carries the `Decision` out (alias
moves, re-pointing, status, Events). Tests build the inputs literally.

The rules, in order (the first that applies wins):

1. ERROR   ``InvalidObservations`` — the inputs contradict themselves (NaN scores, labels other than 0/1,
   shadow-mode rows that are not the same requests, one version on both arms ...). Waiting will not help.
2. ROLLBACK ``GuardrailBreached`` — a guardrail reading is present and over its limit (challenger error
   rate, challenger p99 latency, arm-vs-arm score PSI). A known breach needs no statistics.
3. HOLD    ``InsufficientSamples`` / ``InsufficientPositives`` — too few *matured* labelled rows or frauds on
   an arm (`mature`: a transaction counts once it is ``labelDelaySeconds`` old, with the label known then).
4. ROLLBACK ``ChallengerWorse`` — the sequential test says the challenger is worse on the criterion.
5. PROMOTE ``ChallengerBetter`` — the sequential test says it is better, every guardrail was readable, and
   the promotion is automatic or this challenger version was approved. If the policy needs approval and
   none was given: PROMOTE ``AwaitingApproval`` with ``awaiting_approval=True`` (``act`` is False): the
   controller reports and waits for ``kingmaker promote --approve``.
   HOLD    ``GuardrailUnavailable`` — better, but a guardrail could not be read: never promote blind.
6. HOLD    ``Inconclusive`` (or, for the PR-AUC plan, ``AwaitingAnalysis`` / ``PlanExhausted``).

Statistics: `k8s.sequential` (why they stay valid under repeated looks is documented there). It takes
plain numbers; `criterion_values` and `gain_scale` below are the one place the `Policy` is read for it.

Which rows are compared (`comparison_rows`): in shadow mode every request, paired. In split mode with the
Router's pairing on, a request answered by one arm is also scored by the other (logged with ``served``
False); requests with both rows are compared as pairs of the same transaction (`split_pairs`), labels
from the one transaction. This assumes a label does not depend on which arm answered: where an arm's
decision changes the outcome (a blocked transaction's fraud label is only ever seen for the arm that
blocked it), pairs favour the blocking arm, so leave pairing off or label blocked transactions by review.
While pairs are fewer than the challenger's own answered requests, split mode compares each arm's served
rows as two samples (blocks in the traffic ratio). ``Evidence.comparison`` records which.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from k8s import sequential
from k8s.policy import Approval, Criterion, Policy
from k8s.sequential import (
    BettingResult,
    betting_test,
    pair_blocks,
    planned_observations,
    pr_auc_analysis,
    split_ratio,
    transaction_costs,
)
from kingmaker import maturity
from kingmaker.roles import Mode

Floats = NDArray[np.float64]


class Outcome(StrEnum):
    PROMOTE = "PROMOTE"
    HOLD = "HOLD"
    ROLLBACK = "ROLLBACK"
    ERROR = "ERROR"


class Reason(StrEnum):
    """Machine-readable reason (a Kubernetes condition/Event ``reason``); the message says the rest."""

    CHALLENGER_BETTER = "ChallengerBetter"
    AWAITING_APPROVAL = "AwaitingApproval"
    CHALLENGER_WORSE = "ChallengerWorse"
    GUARDRAIL_BREACHED = "GuardrailBreached"
    GUARDRAIL_UNAVAILABLE = "GuardrailUnavailable"
    INSUFFICIENT_SAMPLES = "InsufficientSamples"
    INSUFFICIENT_POSITIVES = "InsufficientPositives"
    INCONCLUSIVE = "Inconclusive"
    AWAITING_ANALYSIS = "AwaitingAnalysis"
    PLAN_EXHAUSTED = "PlanExhausted"
    INVALID_OBSERVATIONS = "InvalidObservations"


OUTCOME_OF: dict[Reason, Outcome] = {
    Reason.CHALLENGER_BETTER: Outcome.PROMOTE,
    Reason.AWAITING_APPROVAL: Outcome.PROMOTE,
    Reason.CHALLENGER_WORSE: Outcome.ROLLBACK,
    Reason.GUARDRAIL_BREACHED: Outcome.ROLLBACK,
    Reason.GUARDRAIL_UNAVAILABLE: Outcome.HOLD,
    Reason.INSUFFICIENT_SAMPLES: Outcome.HOLD,
    Reason.INSUFFICIENT_POSITIVES: Outcome.HOLD,
    Reason.INCONCLUSIVE: Outcome.HOLD,
    Reason.AWAITING_ANALYSIS: Outcome.HOLD,
    Reason.PLAN_EXHAUSTED: Outcome.HOLD,
    Reason.INVALID_OBSERVATIONS: Outcome.ERROR,
}


# --- inputs ------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class ArmRows:
    """One arm's logged predictions joined with their labels, any order (times are unix seconds).

    ``label`` is 1 (fraud), 0 (legitimate) or NaN (no label yet); ``label_ts`` is when the label arrived
    (NaN without one). ``amount`` is the policy's amount feature (NaN where unknown), or None. ``served``
    says whether this arm's answer went to the client (split mode with pairing: the other arm also scored
    the request off the response path and logged it with ``served`` False); None = not known.
    """

    version: str
    ts: Floats
    score: Floats
    label: Floats
    label_ts: Floats
    amount: Floats | None = None
    request_id: NDArray[np.str_] | None = None
    served: NDArray[np.bool_] | None = None

    @classmethod
    def of(cls, version: str, *, ts: Sequence[float] | Floats, score: Sequence[float] | Floats,
           label: Sequence[float] | Floats, label_ts: Sequence[float] | Floats | None = None,
           amount: Sequence[float] | Floats | None = None,
           request_id: Sequence[str] | NDArray[np.str_] | None = None,
           served: Sequence[bool] | NDArray[np.bool_] | None = None) -> ArmRows:
        """Build from sequences; without ``label_ts`` every label is taken as known at prediction time."""
        ts_arr = np.asarray(ts, dtype=np.float64)
        label_arr = np.asarray(label, dtype=np.float64)
        return cls(
            version=version, ts=ts_arr, score=np.asarray(score, dtype=np.float64), label=label_arr,
            label_ts=np.where(np.isnan(label_arr), np.nan, ts_arr) if label_ts is None
            else np.asarray(label_ts, dtype=np.float64),
            amount=None if amount is None else np.asarray(amount, dtype=np.float64),
            request_id=None if request_id is None else np.asarray(request_id, dtype=str),
            served=None if served is None else np.asarray(served, dtype=bool),
        )

    def __len__(self) -> int:
        return int(self.ts.size)


@dataclass(frozen=True)
class GuardrailReadings:
    """The challenger's serving health from Prometheus; None = could not be read."""

    error_rate: float | None = None  # share of the challenger's requests that failed
    p99_latency_seconds: float | None = None


@dataclass(frozen=True)
class DriftSummary:
    """The latest drift job result that concerns the arms."""

    score_psi: float | None = None  # PSI of the challenger's scores against the champion's; None = missing
    drifted_features: tuple[str, ...] = ()  # features whose live values drifted from training (context only)
    computed_at: float | None = None  # unix seconds


@dataclass(frozen=True, eq=False)
class Observations:
    """Everything `decide` looks at, gathered by the controller's observe step."""

    now: float  # unix seconds when observed: maturity is judged against it
    mode: Mode
    challenger_weight: float  # configured share of traffic (split mode); fixes the pairing ratio
    champion: ArmRows
    challenger: ArmRows
    guardrails: GuardrailReadings = field(default_factory=GuardrailReadings)
    drift: DriftSummary | None = None

    @property
    def shadow(self) -> bool:
        """Shadow mode: both arms scored the same requests, row ``i`` of each is the same request."""
        return self.mode is Mode.SHADOW


@dataclass(frozen=True)
class State:
    """What the controller remembers between looks (kept in the resource's status/spec)."""

    champion_version: str | None = None  # the pair this state belongs to; another pair starts afresh
    challenger_version: str | None = None
    looks: int = 0  # evaluations of this pair so far
    analyses_done: int = 0  # PR-AUC plan: planned analyses already spent
    approved_version: str | None = None  # challenger version a human approved (spec.approvedChallengerVersion)
    plan_better: bool = False  # PR-AUC plan: an analysis crossed the "better" boundary (a final verdict)

    def for_pair(self, champion: str, challenger: str) -> State:
        """This state if it belongs to the pair, else a fresh one (keeping a matching approval)."""
        if (self.champion_version, self.challenger_version) == (champion, challenger):
            return self
        return State(champion, challenger, approved_version=self.approved_version)


# --- maturity ----------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Matured:
    """An arm's rows that count, in prediction-time order, and what was left out."""

    score: Floats
    label: NDArray[np.bool_]
    amount: Floats | None
    immature: int  # younger than the label delay
    unlabelled: int  # old enough but no label arrived within the delay
    ts: Floats | None = None  # prediction times, request ids and served flags of the rows (when known)
    request_id: NDArray[np.str_] | None = None
    served: NDArray[np.bool_] | None = None

    def take(self, rows: NDArray[np.intp] | NDArray[np.bool_]) -> Matured:
        """These rows only (indices or a mask), in the order given; the left-out counts stay."""
        def pick(x: Any) -> Any:
            return None if x is None else x[rows]

        return Matured(self.score[rows], self.label[rows], pick(self.amount), self.immature, self.unlabelled,
                       pick(self.ts), pick(self.request_id), pick(self.served))

    @property
    def labelled(self) -> int:
        return int(self.score.size)

    @property
    def positives(self) -> int:
        return int(self.label.sum())


def mature(rows: ArmRows, *, now: float, label_delay_seconds: float) -> Matured:
    """Rows that count at ``now``: predicted at least ``label_delay_seconds`` ago, label known by then.

    A row's inclusion is decided once, at ``ts + delay``: labels that arrive later are ignored. So each look
    sees the previous look's rows plus newer ones, in the same order: the fixed, growing sequence the
    sequential test needs. Rows are ordered by prediction time (stable for ties).
    """
    order = np.argsort(rows.ts, kind="stable")
    ts, label, label_ts = rows.ts[order], rows.label[order], rows.label_ts[order]
    due = maturity.due(ts, now=now, label_delay_seconds=label_delay_seconds)
    known = maturity.matured(ts, label, label_ts, now=now, label_delay_seconds=label_delay_seconds)
    return Matured(
        score=rows.score[order][known], label=label[known] == 1.0,
        amount=None if rows.amount is None else rows.amount[order][known],
        immature=int((~due).sum()), unlabelled=int((due & ~known).sum()), ts=ts[known],
        request_id=None if rows.request_id is None else rows.request_id[order][known],
        served=None if rows.served is None else rows.served[order][known],
    )


class Comparison(StrEnum):
    """How the arms are compared: on the same transactions, or as two samples."""

    PAIRED = "paired"  # shadow mode, or split mode where the other arm also scored the request
    UNPAIRED = "unpaired"  # split mode: blocks of each arm's own requests (9 : 1 at a 10 % weight)


def split_pairs(a: Matured, b: Matured) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Split mode with pairing: rows of ``a`` and ``b`` for the same request, one arm served, one not.

    Returned as index arrays into ``a`` and ``b``, ordered by the later of the two prediction times (when
    the pair was complete), then request id: a pair enters the test once both rows have matured, so each
    look extends the previous look's sequence. Rows without request ids or served flags never pair.
    """
    none = np.zeros(0, dtype=np.intp)
    if a.request_id is None or b.request_id is None or a.served is None or b.served is None or a.ts is None \
            or b.ts is None:
        return none, none
    common, ia, ib = np.intersect1d(a.request_id, b.request_id, assume_unique=True, return_indices=True)
    one_served = a.served[ia] != b.served[ib]
    common, ia, ib = common[one_served], ia[one_served], ib[one_served]
    order = np.lexsort((common, np.maximum(a.ts[ia], b.ts[ib])))
    return ia[order].astype(np.intp), ib[order].astype(np.intp)


def comparison_rows(mode: Mode, a: Matured, b: Matured) -> tuple[Comparison, Matured, Matured]:
    """The rows each arm contributes to the comparison, and how they are compared.

    Shadow: every row, paired row by row. Split: the pairs of `split_pairs` when there are at least as many
    as the challenger's own served rows (with ``pairing: all`` always; at a pairing sample rate below the
    challenger's weight, never), else each arm's served rows as two samples (rows without a served flag
    count as served). The choice is made at every look from these counts; at a pairing rate close to the
    challenger weight it can go either way early on, so pair all traffic, or at least twice the weight.
    """
    if mode is Mode.SHADOW:
        return Comparison.PAIRED, a, b
    ia, ib = split_pairs(a, b)
    served_b = b.labelled if b.served is None else int(b.served.sum())
    if ia.size and ia.size >= served_b:
        return Comparison.PAIRED, a.take(ia), b.take(ib)
    return (Comparison.UNPAIRED, a if a.served is None else a.take(a.served),
            b if b.served is None else b.take(b.served))


# --- outputs -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ArmEvidence:
    version: str
    labelled: int  # matured labelled rows
    positives: int  # matured frauds
    unlabelled: int  # matured rows without a label in time (left out)
    immature: int  # rows younger than the label delay
    estimate: float | None = None  # the criterion for this arm on the tested rows


@dataclass(frozen=True)
class Evidence:
    """Numbers behind a decision: what the controller writes to status, Events and MLflow tags."""

    criterion: Criterion
    mode: Mode
    champion: ArmEvidence
    challenger: ArmEvidence
    alpha: float
    looks: int  # this look included
    comparison: Comparison = Comparison.PAIRED  # paired transactions, or two samples (split without enough pairs)
    tested: int = 0  # observations (rows, frauds or pairs) in the test
    difference: float | None = None  # challenger minus champion, criterion units (cost per 1k transactions ...)
    interval: tuple[float, float] | None = None  # always-valid (1 - 2 alpha) confidence sequence for it
    p_better: float | None = None  # always-valid p-value of "challenger not better"
    p_worse: float | None = None
    z: float | None = None  # PR-AUC plan only
    boundary: float | None = None
    analysis: str | None = None  # "4/10"
    guardrails: GuardrailReadings = field(default_factory=GuardrailReadings)
    score_psi: float | None = None
    drifted_features: tuple[str, ...] = ()
    breaches: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (for status, Events, MLflow tags): NaN becomes None, tuples become lists."""
        def clean(value: Any) -> Any:
            if isinstance(value, float):
                return None if math.isnan(value) else value
            if isinstance(value, StrEnum):
                return value.value
            if isinstance(value, tuple):
                return [clean(v) for v in value]
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            return value

        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, (ArmEvidence, GuardrailReadings)):
                value = {k: getattr(value, k) for k in value.__dataclass_fields__}
            out[name] = clean(value)
        return out


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: Reason
    message: str  # one human-readable line with the numbers
    evidence: Evidence
    state: State  # what to remember for the next look
    awaiting_approval: bool = False  # PROMOTE that a human must approve first

    @property
    def act(self) -> bool:
        """Whether the controller should change anything (swap or roll back) now."""
        return self.outcome in (Outcome.PROMOTE, Outcome.ROLLBACK) and not self.awaiting_approval


# --- validation --------------------------------------------------------------------------------

def _problems(obs: Observations) -> list[str]:
    found: list[str] = []
    if not (math.isfinite(obs.now)):
        found.append(f"observation time is not finite ({obs.now})")
    if not 0.0 <= obs.challenger_weight <= 1.0:
        found.append(f"challenger weight {obs.challenger_weight} is outside [0, 1]")
    elif not obs.shadow and not 0.0 < obs.challenger_weight < 1.0:
        found.append(f"split mode needs both arms in traffic, got challenger weight {obs.challenger_weight:g}")
    if obs.champion.version == obs.challenger.version:
        found.append(f"champion and challenger are the same version ({obs.champion.version})")
    for name, arm in (("champion", obs.champion), ("challenger", obs.challenger)):
        n = len(arm)
        arrays = {"score": arm.score, "label": arm.label, "label_ts": arm.label_ts, "amount": arm.amount,
                  "request_id": arm.request_id, "served": arm.served}
        wrong = [k for k, v in arrays.items() if v is not None and v.shape != (n,)]
        if wrong:
            found.append(f"{name}: {', '.join(wrong)} not one value per row ({n} rows)")
            continue
        if not np.all(np.isfinite(arm.ts)):
            found.append(f"{name}: prediction times must be finite")
        if not np.all(np.isfinite(arm.score)):
            found.append(f"{name}: {int((~np.isfinite(arm.score)).sum())} score(s) are NaN or infinite")
        bad_labels = ~np.isnan(arm.label) & (arm.label != 0.0) & (arm.label != 1.0)
        if bad_labels.any():
            odd = sorted({float(v) for v in arm.label[bad_labels]})[:3]
            found.append(f"{name}: labels must be 0, 1 or missing, got {', '.join(f'{v:g}' for v in odd)}")
        if np.any(~np.isnan(arm.label) & np.isnan(arm.label_ts)):
            found.append(f"{name}: a label without a label time")
        if arm.amount is not None and np.any(arm.amount < 0):
            found.append(f"{name}: negative amounts")
    if obs.shadow and not found:
        a, b = obs.champion, obs.challenger
        if len(a) != len(b):
            found.append(f"shadow mode needs the same requests on both arms, got {len(a)} and {len(b)} rows")
        elif a.request_id is not None and b.request_id is not None and not np.array_equal(a.request_id, b.request_id):
            found.append("shadow mode: the arms' request ids differ row by row")
        elif not (np.array_equal(a.ts, b.ts) and np.array_equal(a.label, b.label, equal_nan=True)
                  and np.array_equal(a.label_ts, b.label_ts, equal_nan=True)):
            found.append("shadow mode: the arms' rows disagree on time or label")
    return found


# --- criteria ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Test:
    """A criterion's comparison, ready to be put into words."""

    champion: float  # the criterion for each arm (cost per 1k transactions, or recall)
    challenger: float
    result: BettingResult
    to_units: float  # gain (normalised) -> criterion units of "challenger minus champion"
    frauds: int  # frauds among the tested rows


def criterion_values(scores: Floats, labels: NDArray[np.bool_], missed_costs: Floats,
                     policy: Policy) -> tuple[Floats, NDArray[np.bool_], NDArray[np.bool_]]:
    """An arm's per-row values for the policy's criterion (higher is better), tested rows, and alerts.

    Works on ``(n,)`` or ``(runs, n)`` arrays; `decide` and the simulator (`k8s.simulate`) both call it.
    """
    if policy.criterion is Criterion.EXPECTED_COST:
        return sequential.cost_values(scores, labels, missed_costs, alert_rate=policy.alert_rate,
                                      review_cost=policy.cost.review_cost, bound=policy.cost.bound)
    if policy.criterion is Criterion.RECALL_AT_FPR:
        return sequential.recall_values(scores, labels, fpr=policy.fpr)
    raise ValueError(f"{policy.criterion} is not a per-row criterion (it uses the PR-AUC plan)")


def gain_scale(policy: Policy, paired: bool) -> float:
    """`k8s.sequential.gain_scale` for the policy's criterion."""
    return sequential.gain_scale(recall=policy.criterion is Criterion.RECALL_AT_FPR, paired=paired)


def _missed(m: Matured, policy: Policy) -> Floats:
    constant = np.full(m.score.shape, policy.cost.missed_fraud_cost)
    if policy.cost.amount_feature is None or m.amount is None or policy.cost.amount_cap is None:
        return constant
    return np.where(np.isnan(m.amount), constant, np.minimum(m.amount, policy.cost.amount_cap))


def _mean(x: Floats) -> float:
    return float(x.mean()) if x.size else math.nan


def _betting(a: Matured, b: Matured, paired: bool, challenger_weight: float, policy: Policy) -> _Test:
    """The always-valid comparison of two arms' per-row values (higher is better); ``paired``: row ``i`` of
    each arm is the same transaction."""
    va, ta, fa = criterion_values(a.score, a.label, _missed(a, policy), policy)
    vb, tb, fb = criterion_values(b.score, b.label, _missed(b, policy), policy)
    scale = gain_scale(policy, paired)
    ratio: tuple[int, int] | None = None
    if paired:
        both = ta & tb
        gains = (vb[both] - va[both]) / scale
        rows_a = rows_b = both
    else:
        ratio = ka, kb = split_ratio(challenger_weight)
        a_mean, b_mean = pair_blocks(va[ta][None, :], vb[tb][None, :], ratio)
        gains = (b_mean[0] - a_mean[0]) / scale
        # the rows that made the pairs
        rows_a = ta & (np.cumsum(ta) <= a_mean.shape[1] * ka)
        rows_b = tb & (np.cumsum(tb) <= b_mean.shape[1] * kb)
    result = betting_test(gains, policy.alpha, planned_observations(policy.planned_labels, ratio))
    frauds = int(a.label[rows_a].sum() + (0 if paired else b.label[rows_b].sum()))
    if policy.criterion is Criterion.EXPECTED_COST:
        # per-arm estimates: plain cost; the difference and its interval: the test's corrected cost
        cost_a = transaction_costs(fa, a.label, _missed(a, policy), policy.cost.review_cost)
        cost_b = transaction_costs(fb, b.label, _missed(b, policy), policy.cost.review_cost)
        return _Test(1000.0 * _mean(cost_a[rows_a]), 1000.0 * _mean(cost_b[rows_b]), result,
                     -1000.0 * sequential.cost_scale(policy.cost.bound, policy.alert_rate) * scale, frauds)
    # recall: the gain's mean is (fraud share) x (recall difference), up to the scale
    share = (frauds / (rows_a.sum() if paired else rows_a.sum() + rows_b.sum())) if frauds else math.nan
    return _Test(_mean(fa[rows_a & a.label].astype(np.float64)), _mean(fb[rows_b & b.label].astype(np.float64)),
                 result, scale / share if frauds else math.nan, frauds)


def _fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1 else f"{x:.1f}"


def _p(p: float) -> str:
    return f"{p:.2g}" if p < 0.01 else f"{p:.3f}"


# --- the decision ------------------------------------------------------------------------------

def _verdict(reason: Reason, message: str, evidence: Evidence, state: State, *, awaiting: bool = False) -> Decision:
    return Decision(OUTCOME_OF[reason], reason, message, evidence, state, awaiting)


def decide(observations: Observations, policy: Policy, state: State) -> Decision:
    """PROMOTE, HOLD, ROLLBACK or ERROR for the current look, with the reason and the evidence."""
    obs = observations
    state = state.for_pair(obs.champion.version, obs.challenger.version)
    looks = state.looks + 1
    next_state = replace(state, looks=looks)
    blank = Evidence(policy.criterion, obs.mode, ArmEvidence(obs.champion.version, 0, 0, 0, 0),
                     ArmEvidence(obs.challenger.version, 0, 0, 0, 0), policy.alpha, looks,
                     guardrails=obs.guardrails)

    def verdict(reason: Reason, message: str, evidence: Evidence) -> Decision:
        return _verdict(reason, message, evidence, next_state)

    problems = _problems(obs)
    if problems:
        return verdict(Reason.INVALID_OBSERVATIONS, "; ".join(problems), blank)

    # guardrails: a breach is enough to roll back; a missing reading only blocks promotion
    g, limits = obs.guardrails, policy.guardrails
    psi = None if obs.drift is None else obs.drift.score_psi
    readings = (
        ("error rate", g.error_rate, limits.max_error_rate, "{:.2%}"),
        ("p99 latency", g.p99_latency_seconds, limits.max_p99_latency_seconds, "{:.3g}s"),
        ("score PSI between arms", psi, limits.max_score_psi, "{:.3g}"),
    )
    breaches = tuple(f"challenger {name} {fmt.format(value)} > max {fmt.format(limit)}"
                     for name, value, limit, fmt in readings if value is not None and value > limit)
    missing = tuple(name for name, value, _, _ in readings if value is None)

    delay = policy.label_delay_seconds
    comparison, ma, mb = comparison_rows(obs.mode, mature(obs.champion, now=obs.now, label_delay_seconds=delay),
                                         mature(obs.challenger, now=obs.now, label_delay_seconds=delay))
    paired = comparison is Comparison.PAIRED
    evidence = replace(
        blank, comparison=comparison,
        champion=ArmEvidence(obs.champion.version, ma.labelled, ma.positives, ma.unlabelled, ma.immature),
        challenger=ArmEvidence(obs.challenger.version, mb.labelled, mb.positives, mb.unlabelled, mb.immature),
        score_psi=psi, drifted_features=() if obs.drift is None else obs.drift.drifted_features,
        breaches=breaches, missing=missing,
    )
    if breaches:
        return verdict(Reason.GUARDRAIL_BREACHED, "; ".join(breaches), evidence)

    for arm, m in (("champion", ma), ("challenger", mb)):
        if m.labelled < policy.min_labelled_per_arm:
            return verdict(Reason.INSUFFICIENT_SAMPLES,
                           f"{arm} has {m.labelled} matured labelled transactions < min {policy.min_labelled_per_arm} "
                           f"({m.immature} younger than the {delay}s label delay, {m.unlabelled} unlabelled)",
                           evidence)
    for arm, m in (("champion", ma), ("challenger", mb)):
        if m.positives < policy.min_positives_per_arm:
            return verdict(Reason.INSUFFICIENT_POSITIVES,
                           f"{arm} has {m.positives} matured frauds < min {policy.min_positives_per_arm} "
                           f"(of {m.labelled} labelled)", evidence)

    if policy.criterion is Criterion.PR_AUC:
        return _decide_plan(obs, policy, next_state, evidence, ma, mb, missing)

    test = _betting(ma, mb, paired, obs.challenger_weight, policy)
    r = test.result
    lo, hi = sorted((r.lower * test.to_units, r.upper * test.to_units))
    evidence = replace(
        evidence, tested=r.n, difference=r.mean * test.to_units if r.n else None, interval=(lo, hi) if r.n else None,
        p_better=r.p_better, p_worse=r.p_worse,
        champion=replace(evidence.champion, estimate=test.champion),
        challenger=replace(evidence.challenger, estimate=test.challenger),
    )
    if r.n == 0:
        return verdict(Reason.INSUFFICIENT_SAMPLES,
                       "no transactions past the threshold warm-up yet: the test has nothing to compare", evidence)
    what = _describe(policy, test, r.n, obs.mode, paired)
    ci = f"{round(100 * (1 - 2 * policy.alpha))}% CS [{_fmt(lo)}, {_fmt(hi)}]"
    if r.worse:
        return verdict(Reason.CHALLENGER_WORSE,
                       f"{what}; always-valid p={_p(r.p_worse)} <= alpha {policy.alpha:g} that it is worse "
                       f"({ci}) after {looks} looks", evidence)
    if r.better:
        win = f"{what}; always-valid p={_p(r.p_better)} <= alpha {policy.alpha:g} ({ci}) after {looks} looks"
        return _promote(win, policy, obs.challenger.version, evidence, missing, next_state)
    return verdict(Reason.INCONCLUSIVE,
                   f"{what}; always-valid p={_p(r.p_better)} > alpha {policy.alpha:g} ({ci}) after {looks} looks",
                   evidence)


def _describe(policy: Policy, test: _Test, n: int, mode: Mode, paired: bool) -> str:
    unit = "transactions" if mode is Mode.SHADOW else "paired transactions" if paired else "pairs"
    if policy.criterion is Criterion.EXPECTED_COST:
        return (f"challenger cost {_fmt(test.challenger)} vs champion {_fmt(test.champion)} per 1k txns "
                f"at alert rate {policy.alert_rate:g} over {n} {unit}")
    return (f"challenger recall {test.challenger:.3f} vs champion {test.champion:.3f} at FPR {policy.fpr:g} "
            f"over {n} {unit} ({test.frauds} frauds)")


def _promote(win: str, policy: Policy, challenger_version: str, evidence: Evidence, missing: tuple[str, ...],
             state: State) -> Decision:
    """The test says better: promote, or hold for a missing guardrail, or wait for a human."""
    if missing:
        return _verdict(Reason.GUARDRAIL_UNAVAILABLE,
                        f"{win}, but not promoting: {', '.join(missing)} unavailable", evidence, state)
    if policy.approval is Approval.MANUAL and state.approved_version != challenger_version:
        return _verdict(Reason.AWAITING_APPROVAL,
                        f"{win}; awaiting approval of version {challenger_version} (kingmaker promote --approve)",
                        evidence, state, awaiting=True)
    return _verdict(Reason.CHALLENGER_BETTER, win, evidence, state)


def _decide_plan(obs: Observations, policy: Policy, state: State, evidence: Evidence, ma: Matured,
                 mb: Matured, missing: tuple[str, ...]) -> Decision:
    """PR-AUC: one of ``plannedAnalyses`` O'Brien-Fleming analyses when the information allows."""
    K = policy.planned_analyses
    have = min(ma.labelled, mb.labelled)
    reached = min(K, (have * K) // policy.horizon_per_arm)
    done = state.analyses_done
    if state.plan_better:  # the plan has stopped for efficacy; only guardrails or approval were missing
        return _promote(f"the PR-AUC plan found the challenger better at analysis {done}/{K}", policy,
                        obs.challenger.version, evidence, missing, state)
    if done >= K:
        return _verdict(Reason.PLAN_EXHAUSTED,
                        f"all {K} planned PR-AUC analyses done without a verdict: inconclusive; start a new "
                        f"experiment to test again", evidence, state)
    if reached <= done:
        need = -(-(done + 1) * policy.horizon_per_arm // K)
        return _verdict(Reason.AWAITING_ANALYSIS,
                        f"next planned PR-AUC analysis ({done + 1}/{K}) at {need} labelled per arm, have {have}",
                        evidence, state)
    plan = pr_auc_analysis((ma.score, ma.label.astype(np.float64)), (mb.score, mb.label.astype(np.float64)),
                           paired=evidence.comparison is Comparison.PAIRED, alpha=policy.alpha, analysis=reached, analyses=K)
    state = replace(state, analyses_done=reached)
    diff = plan.challenger - plan.champion
    evidence = replace(
        evidence, tested=have, difference=diff,
        interval=(diff - plan.boundary * plan.se, diff + plan.boundary * plan.se),
        z=plan.z, boundary=plan.boundary, analysis=f"{reached}/{K}",
        champion=replace(evidence.champion, estimate=plan.champion),
        challenger=replace(evidence.challenger, estimate=plan.challenger),
    )
    what = (f"challenger PR-AUC {plan.challenger:.3f} vs champion {plan.champion:.3f} over {have} per arm "
            f"(z={plan.z:.2f}, O'Brien-Fleming boundary {plan.boundary:.2f} at analysis {reached}/{K})")
    if plan.worse:
        return _verdict(Reason.CHALLENGER_WORSE, f"{what}: worse", evidence, state)
    if plan.better:
        state = replace(state, plan_better=True)
        return _promote(f"{what}: better", policy, obs.challenger.version, evidence, missing, state)
    return _verdict(Reason.INCONCLUSIVE, f"{what}: inside the boundary", evidence, state)
