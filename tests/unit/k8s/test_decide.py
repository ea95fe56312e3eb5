"""decide() with literal inputs: every outcome, every reason, and the numbers behind them.

The standard data set (see conftest): 2,000 transactions, every 50th a fraud (40 frauds), legitimate
scores a fixed permutation of 0.000 ... 0.499 per block of 500 rows. An arm that scores frauds 0.99 flags
exactly the frauds at a 2 % alert rate; one that scores them 0.0005 flags the ten legitimate rows
0.490 ... 0.499 per block and misses every fraud. Hand-computed over the 1,500 rows past the warm-up block
(30 frauds): the good arm costs 30 x 5 / 1.5 = 100.0 per 1k, the bad one (30 x 100 + 30 x 5) / 1.5 = 2100.0.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from k8s.decide import (
    OUTCOME_OF,
    ArmRows,
    Decision,
    DriftSummary,
    GuardrailReadings,
    Outcome,
    Reason,
    State,
    decide,
    mature,
    split_pairs,
)
from k8s.resource import Phase, phase_for
from kingmaker.roles import Mode

from .conftest import arm, observations, policy, scores

N = 2000
GOOD = scores(N, fraud_score=0.99)
BAD = scores(N, fraud_score=0.0005)


def better(**kw: object) -> Decision:
    return decide(observations(arm("1", BAD), arm("2", GOOD)), policy(**kw), State())


# --- PROMOTE -------------------------------------------------------------------------------------

def test_a_clearly_better_challenger_is_promoted_with_hand_computed_evidence() -> None:
    d = better()
    assert (d.outcome, d.reason, d.act, d.awaiting_approval) == (Outcome.PROMOTE, Reason.CHALLENGER_BETTER, True, False)
    ev = d.evidence
    assert ev.champion.estimate == pytest.approx(2100.0, abs=1e-9)
    assert ev.challenger.estimate == pytest.approx(100.0, abs=1e-9)
    assert ev.difference == pytest.approx(-2000.0, abs=1e-9)
    assert ev.tested == 1500
    assert (ev.champion.labelled, ev.champion.positives, ev.challenger.positives) == (2000, 40, 40)
    assert ev.interval is not None and ev.interval[0] <= -2000.0 <= ev.interval[1] < 0
    assert ev.p_better is not None and ev.p_better < 1e-4 and ev.p_worse == 1.0
    assert d.message.startswith("challenger cost 100.0 vs champion 2100.0 per 1k txns at alert rate 0.02 "
                                "over 1500 transactions; always-valid p=")
    assert "<= alpha 0.05 (90% CS [" in d.message and d.message.endswith("after 1 looks")


def test_a_planned_horizon_reaches_the_test_in_its_observations(monkeypatch: pytest.MonkeyPatch) -> None:
    """plannedLabels moves the bets (the p-value), never the point estimate; the test gets it in its own
    observations: transactions when paired, pairs of 9 + 1 rows in a 90/10 split."""
    from k8s import decide as decide_module

    weak = scores(N, fraud_score=0.3)  # frauds ranked inside the legitimate band: a small, uncertain gain
    plain = decide(observations(arm("1", weak), arm("2", GOOD)), policy(), State()).evidence
    seen: list[float | None] = []
    real = decide_module.betting_test
    monkeypatch.setattr(decide_module, "betting_test",
                        lambda g, alpha, planned=None: seen.append(planned) or real(g, alpha, planned))
    planned = decide(observations(arm("1", weak), arm("2", GOOD)), policy(plannedLabels=1_500), State()).evidence
    assert planned.difference == plain.difference and planned.p_better != plain.p_better
    decide(observations(arm("1", scores(9000, fraud_score=0.3)), arm("2", GOOD), mode=Mode.SPLIT, weight=0.1),
           policy(plannedLabels=9_440), State())
    assert seen == [1_500.0, 944.0]


def test_looks_are_counted_per_pair_and_reset_for_a_new_pair() -> None:
    obs = observations(arm("1", BAD), arm("2", GOOD))
    d = decide(obs, policy(), State("1", "2", looks=36))
    assert d.message.endswith("after 37 looks") and d.state.looks == 37
    fresh = decide(obs, policy(), State("1", "3", looks=36))  # state of an older challenger
    assert fresh.state == State("1", "2", looks=1)


def test_manual_approval_reports_a_win_but_waits() -> None:
    d = better(approval="manual")
    assert (d.outcome, d.reason, d.awaiting_approval, d.act) == (Outcome.PROMOTE, Reason.AWAITING_APPROVAL, True, False)
    assert "awaiting approval of version 2 (kingmaker promote --approve)" in d.message
    assert phase_for(d) is Phase.AWAITING_APPROVAL


def test_an_approval_counts_only_for_the_approved_version() -> None:
    obs = observations(arm("1", BAD), arm("2", GOOD))
    stale = decide(obs, policy(approval="manual"), State(approved_version="7"))
    assert stale.reason is Reason.AWAITING_APPROVAL
    approved = decide(obs, policy(approval="manual"), State(approved_version="2"))
    assert (approved.reason, approved.act) == (Reason.CHALLENGER_BETTER, True)
    assert phase_for(approved) is Phase.PROMOTING


def test_split_mode_pairs_nine_champion_rows_with_one_challenger_row() -> None:
    champion = arm("1", scores(9000, fraud_score=0.0005))
    challenger = arm("2", GOOD)
    d = decide(observations(champion, challenger, mode=Mode.SPLIT, weight=0.1), policy(), State())
    assert d.reason is Reason.CHALLENGER_BETTER
    assert d.evidence.tested == (9000 - 500) // 9  # 944 pairs, limited by the champion's 8,500 tested rows
    assert "over 944 pairs" in d.message


def split_arms(pairs: np.ndarray) -> tuple[ArmRows, ArmRows]:
    """The standard data as a 90/10 split: every 10th request answered by the challenger (GOOD), the rest by
    the champion (BAD); requests in ``pairs`` are also scored by the other arm off the response path."""
    ids = np.array([f"r{i}" for i in range(N)])
    to_b = np.arange(N) % 10 == 9
    label = (np.arange(N) % 50 == 49).astype(float)

    def side(version: str, score: np.ndarray, own: np.ndarray) -> ArmRows:
        keep = own | pairs
        return ArmRows.of(version, ts=np.arange(N)[keep] + 0.001 * ~own[keep], score=score[keep],
                          label=label[keep], request_id=ids[keep], served=own[keep])

    return side("1", BAD, ~to_b), side("2", GOOD, to_b)


def test_paired_split_compares_the_arms_on_the_same_transactions() -> None:
    """Pairing on for every request: the same 1,500 tested transactions and costs as in shadow mode."""
    a, b = split_arms(np.ones(N, bool))
    d = decide(observations(a, b, mode=Mode.SPLIT, weight=0.1), policy(), State())
    assert (d.reason, d.evidence.comparison) == (Reason.CHALLENGER_BETTER, "paired")
    ev = d.evidence
    assert (ev.tested, ev.champion.labelled, ev.challenger.labelled, ev.challenger.positives) == (1500, N, N, 40)
    assert (ev.champion.estimate, ev.challenger.estimate) == pytest.approx((2100.0, 100.0), abs=1e-9)
    assert "over 1500 paired transactions" in d.message
    assert d.evidence.as_dict()["comparison"] == "paired"


def test_split_falls_back_to_blocks_when_pairs_are_fewer_than_the_challengers_own_rows() -> None:
    some = np.arange(N) % 40 == 0  # 50 pairs (2.5 % of requests) < 200 challenger-answered requests
    a, b = split_arms(some)
    d = decide(observations(a, b, mode=Mode.SPLIT, weight=0.1), policy(), State())
    assert d.evidence.comparison == "unpaired"
    assert (d.evidence.champion.labelled, d.evidence.challenger.labelled) == (1800, 200)  # served rows only
    assert d.reason is Reason.INSUFFICIENT_SAMPLES  # 200 < min 500 labelled per arm


def test_rows_without_served_flags_never_pair() -> None:
    a, b = split_arms(np.ones(N, bool))
    unflagged = ArmRows.of("2", ts=b.ts, score=b.score, label=b.label, request_id=b.request_id)
    d = decide(observations(a, unflagged, mode=Mode.SPLIT, weight=0.1), policy(), State())
    assert d.evidence.comparison == "unpaired"


def test_split_pairs_are_ordered_by_when_both_rows_exist() -> None:
    a = mature(ArmRows.of("1", ts=[0.0, 1.0, 2.0, 3.0], score=[0.1] * 4, label=[0, 0, 1, 0],
                          request_id=["x", "y", "z", "w"], served=[True, True, False, True]), now=10,
               label_delay_seconds=0)
    b = mature(ArmRows.of("2", ts=[5.0, 1.5, 2.0, 3.5], score=[0.2] * 4, label=[0, 0, 1, 0],
                          request_id=["x", "y", "z", "v"], served=[False, False, True, True]), now=10,
               label_delay_seconds=0)
    ia, ib = split_pairs(a, b)
    # pairs y (complete at 1.5), z (2.0), x (5.0); w and v are on one arm only
    assert [a.request_id[i] for i in ia] == [b.request_id[i] for i in ib] == ["y", "z", "x"]


def test_recall_at_fpr_compares_detected_frauds_at_the_same_false_positive_rate() -> None:
    # both arms score legitimate rows alike, so they flag the same ten per block: the legitimate rows'
    # threshold correction cancels and the difference is the plain recall difference, 1.0 - 0.0
    d = better(criterion="recall-at-fpr", fpr=0.02)
    assert d.reason is Reason.CHALLENGER_BETTER
    assert (d.evidence.champion.estimate, d.evidence.challenger.estimate) == (0.0, 1.0)
    assert d.evidence.tested == 1500 and d.evidence.difference == pytest.approx(1.0, abs=1e-12)
    assert d.message.startswith("challenger recall 1.000 vs champion 0.000 at FPR 0.02 over 1500 transactions "
                                "(30 frauds)")


# --- ROLLBACK ------------------------------------------------------------------------------------

def test_a_clearly_worse_challenger_is_rolled_back() -> None:
    d = decide(observations(arm("1", GOOD), arm("2", BAD)), policy(), State())
    assert (d.outcome, d.reason, d.act) == (Outcome.ROLLBACK, Reason.CHALLENGER_WORSE, True)
    assert d.evidence.difference == pytest.approx(2000.0, abs=1e-9)
    assert "that it is worse" in d.message
    assert phase_for(d) is Phase.ROLLING_BACK


def test_a_worse_challenger_is_rolled_back_even_without_guardrail_readings() -> None:
    obs = observations(arm("1", GOOD), arm("2", BAD), guardrails=GuardrailReadings(), drift=None)
    assert decide(obs, policy(), State()).reason is Reason.CHALLENGER_WORSE


@pytest.mark.parametrize(("guardrails", "psi", "expected"), [
    (GuardrailReadings(0.05, 0.05), 0.02, ["challenger error rate 5.00% > max 1.00%"]),
    (GuardrailReadings(0.0, 0.4), 0.02, ["challenger p99 latency 0.4s > max 0.25s"]),
    (GuardrailReadings(0.0, 0.05), 0.31, ["challenger score PSI between arms 0.31 > max 0.25"]),
    (GuardrailReadings(0.02, None), 0.5, ["challenger error rate 2.00% > max 1.00%",
                                          "challenger score PSI between arms 0.5 > max 0.25"]),
])
def test_a_guardrail_breach_rolls_back_before_any_statistics(guardrails: GuardrailReadings, psi: float,
                                                              expected: list[str]) -> None:
    # only 100 rows: far too few for the test, but a breach needs no statistics
    obs = observations(arm("1", BAD[:100]), arm("2", GOOD[:100]), guardrails=guardrails,
                       drift=DriftSummary(score_psi=psi))
    d = decide(obs, policy(), State())
    assert (d.outcome, d.reason) == (Outcome.ROLLBACK, Reason.GUARDRAIL_BREACHED)
    assert d.message == "; ".join(expected)
    assert list(d.evidence.breaches) == expected


def test_a_reading_exactly_at_the_limit_is_not_a_breach() -> None:
    obs = observations(arm("1", BAD), arm("2", GOOD), guardrails=GuardrailReadings(0.01, 0.25),
                       drift=DriftSummary(score_psi=0.25))
    assert decide(obs, policy(), State()).reason is Reason.CHALLENGER_BETTER


# --- HOLD ----------------------------------------------------------------------------------------

def test_identical_models_are_inconclusive() -> None:
    d = decide(observations(arm("1", GOOD), arm("2", GOOD)), policy(), State())
    assert (d.outcome, d.reason, d.act) == (Outcome.HOLD, Reason.INCONCLUSIVE, False)
    assert d.evidence.difference == 0.0 and d.evidence.p_better == 1.0
    assert "always-valid p=1.000 > alpha 0.05" in d.message
    assert phase_for(d) is Phase.EVALUATING


def test_too_few_labelled_rows_hold() -> None:
    d = decide(observations(arm("1", BAD[:800]), arm("2", GOOD[:800])), policy(), State())
    assert (d.outcome, d.reason) == (Outcome.HOLD, Reason.INSUFFICIENT_SAMPLES)
    assert d.message.startswith("champion has 800 matured labelled transactions < min 1000")


def test_rows_younger_than_the_label_delay_do_not_count() -> None:
    obs = observations(arm("1", BAD), arm("2", GOOD), now=1999.0)
    d = decide(obs, policy(labelDelaySeconds=1500), State())
    assert d.reason is Reason.INSUFFICIENT_SAMPLES
    assert d.message == ("champion has 500 matured labelled transactions < min 1000 "
                         "(1500 younger than the 1500s label delay, 0 unlabelled)")
    assert (d.evidence.champion.immature, d.evidence.challenger.labelled) == (1500, 500)


def test_too_few_frauds_hold() -> None:
    d = better(minPositivesPerArm=41)
    assert (d.outcome, d.reason) == (Outcome.HOLD, Reason.INSUFFICIENT_POSITIVES)
    assert d.message == "champion has 40 matured frauds < min 41 (of 2000 labelled)"


def test_nothing_past_the_threshold_warm_up_holds() -> None:
    obs = observations(arm("1", BAD[:400]), arm("2", GOOD[:400]))
    d = decide(obs, policy(minLabelledPerArm=100, minPositivesPerArm=1), State())
    assert d.reason is Reason.INSUFFICIENT_SAMPLES
    assert "warm-up" in d.message and d.evidence.tested == 0


@pytest.mark.parametrize(("guardrails", "drift", "missing"), [
    (GuardrailReadings(None, 0.05), DriftSummary(0.02), "error rate"),
    (GuardrailReadings(0.0, None), DriftSummary(0.02), "p99 latency"),
    (GuardrailReadings(0.0, 0.05), DriftSummary(None), "score PSI between arms"),
    (GuardrailReadings(0.0, 0.05), None, "score PSI between arms"),
])
def test_a_win_with_an_unreadable_guardrail_holds(guardrails: GuardrailReadings, drift: DriftSummary | None,
                                                  missing: str) -> None:
    d = decide(observations(arm("1", BAD), arm("2", GOOD), guardrails=guardrails, drift=drift), policy(), State())
    assert (d.outcome, d.reason, d.act) == (Outcome.HOLD, Reason.GUARDRAIL_UNAVAILABLE, False)
    assert d.message.endswith(f"but not promoting: {missing} unavailable")
    assert d.evidence.missing == (missing,)


# --- PR-AUC plan ---------------------------------------------------------------------------------

PLAN = {"criterion": "pr-auc", "horizonPerArm": 2000, "plannedAnalyses": 2, "minLabelledPerArm": 100,
        "minPositivesPerArm": 5}


def test_pr_auc_waits_for_the_next_planned_analysis() -> None:
    d = decide(observations(arm("1", BAD[:600]), arm("2", GOOD[:600])), policy(**PLAN), State())
    assert (d.outcome, d.reason) == (Outcome.HOLD, Reason.AWAITING_ANALYSIS)
    assert d.message == "next planned PR-AUC analysis (1/2) at 1000 labelled per arm, have 600"


def test_pr_auc_analysis_finds_a_better_challenger_and_remembers_it() -> None:
    obs = observations(arm("1", BAD[:1000]), arm("2", GOOD[:1000]), guardrails=GuardrailReadings())
    d = decide(obs, policy(**PLAN), State())
    assert d.reason is Reason.GUARDRAIL_UNAVAILABLE  # the win stands, but guardrails are unreadable
    assert d.evidence.challenger.estimate == pytest.approx(1.0)  # frauds ranked first
    assert d.evidence.analysis == "1/2" and d.state.analyses_done == 1 and d.state.plan_better
    later = decide(observations(arm("1", BAD[:1100]), arm("2", GOOD[:1100])), policy(**PLAN), d.state)
    assert later.reason is Reason.CHALLENGER_BETTER and later.act
    assert later.message.startswith("the PR-AUC plan found the challenger better at analysis 1/2")


def test_pr_auc_worse_rolls_back_and_inside_the_boundary_is_inconclusive() -> None:
    worse = decide(observations(arm("1", GOOD[:1000]), arm("2", BAD[:1000])), policy(**PLAN), State())
    assert worse.reason is Reason.CHALLENGER_WORSE and worse.evidence.z is not None and worse.evidence.z < 0
    same = decide(observations(arm("1", GOOD), arm("2", GOOD)), policy(**PLAN), State())
    assert same.reason is Reason.INCONCLUSIVE and same.evidence.analysis == "2/2"
    assert "O'Brien-Fleming boundary" in same.message and same.state.analyses_done == 2


def test_pr_auc_plan_ends_after_its_last_analysis() -> None:
    d = decide(observations(arm("1", GOOD), arm("2", GOOD)), policy(**PLAN), State("1", "2", analyses_done=2))
    assert (d.outcome, d.reason) == (Outcome.HOLD, Reason.PLAN_EXHAUSTED)


# --- ERROR ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("champion", "challenger", "mode", "weight", "message"), [
    (arm("1", np.r_[GOOD[:-1], np.nan]), arm("2", GOOD), Mode.SHADOW, 0.1, "champion: 1 score(s) are NaN or infinite"),
    (arm("1", GOOD), arm("2", GOOD, label=np.full(N, 2.0)), Mode.SPLIT, 0.1,
     "challenger: labels must be 0, 1 or missing, got 2"),
    (arm("1", GOOD), arm("1", GOOD), Mode.SHADOW, 0.1, "champion and challenger are the same version (1)"),
    (arm("1", GOOD), arm("2", GOOD[:-1]), Mode.SHADOW, 0.1,
     "shadow mode needs the same requests on both arms, got 2000 and 1999 rows"),
    (arm("1", GOOD), arm("2", GOOD, ts=np.arange(N) + 0.5), Mode.SHADOW, 0.1,
     "shadow mode: the arms' rows disagree on time or label"),
    (arm("1", GOOD), arm("2", GOOD), Mode.SPLIT, 1.5, "challenger weight 1.5 is outside [0, 1]"),
    (arm("1", GOOD), arm("2", GOOD), Mode.SPLIT, 0.0, "split mode needs both arms in traffic, got challenger weight 0"),
])
def test_contradictory_observations_are_an_error(champion: ArmRows, challenger: ArmRows, mode: Mode,
                                                 weight: float, message: str) -> None:
    d = decide(observations(champion, challenger, mode=mode, weight=weight), policy(), State())
    assert (d.outcome, d.reason, d.act) == (Outcome.ERROR, Reason.INVALID_OBSERVATIONS, False)
    assert message in d.message
    assert phase_for(d) is Phase.ERROR


def test_shadow_rows_for_different_requests_are_an_error() -> None:
    other = ArmRows.of("2", ts=np.arange(N, dtype=float), score=GOOD, label=BAD * 0 + (np.arange(N) % 50 == 49),
                       request_id=[f"x{i}" for i in range(N)])
    d = decide(observations(arm("1", GOOD), other), policy(), State())
    assert d.message == "shadow mode: the arms' request ids differ row by row"


# --- every reason, maturity, evidence --------------------------------------------------------------

def test_every_reason_maps_to_one_outcome_and_is_reached_above() -> None:
    assert set(OUTCOME_OF) == set(Reason)
    source = Path(__file__).read_text()
    unreached = [r.name for r in Reason if f"Reason.{r.name}" not in source.split("# --- every reason")[0]]
    assert unreached == []


def test_maturity_keeps_old_rows_whose_label_arrived_within_the_delay() -> None:
    rows = ArmRows.of("1", ts=[35.0, 0.0, 10.0, 20.0, 5.0], score=[0.3, 0.0, 0.1, 0.2, 0.05],
                      label=[1.0, 0.0, 1.0, np.nan, 0.0], label_ts=[31.0, 50.0, 12.0, np.nan, 9.0])
    m = mature(rows, now=40.0, label_delay_seconds=10.0)
    # ts 35 is too young (35 + 10 > 40); ts 0 got its label at 50 > 0 + 10 (late); ts 20 has none
    assert m.score.tolist() == [0.05, 0.1]  # in time order
    assert m.label.tolist() == [False, True]
    assert (m.labelled, m.positives, m.immature, m.unlabelled) == (2, 1, 1, 2)


def test_evidence_is_json_ready() -> None:
    d = better()
    text = json.dumps(d.evidence.as_dict())
    back = json.loads(text)
    assert back["criterion"] == "expected-cost" and back["mode"] == "shadow"
    assert back["champion"]["positives"] == 40 and back["guardrails"]["error_rate"] == 0.001
    assert not any(isinstance(v, float) and math.isnan(v) for v in back.values())
