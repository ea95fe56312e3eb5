"""The win test: statistics that stay valid although the controller looks again every few minutes.

Why a sequential test
---------------------
The controller re-evaluates the same growing experiment every interval. A fixed-sample test (or a
"challenger better by 5 %" rule, as Argo Rollouts and Flagger use) run at every look eventually fires by
chance: with 100 looks an A/A pair is "promoted" most of the time. Every test here bounds the chance of a
false promotion over the *whole* experiment, however many looks there are.

Expected cost and recall at a fixed FPR: testing by betting (always valid)
--------------------------------------------------------------------------
Both criteria are means of **bounded** per-transaction quantities, so they get an exact,
distribution-free test that needs no normal approximation and no planned horizon:

1. *Matched operating point.* Each arm flags the same share of traffic (expected cost: ``alertRate`` of
   all rows; recall: ``fpr`` of the legitimate rows). An arm's threshold for row ``i`` is the k-th largest
   of its own earlier scores, ``k = max(1, round(rate * N))`` over the ``N`` earlier rows (legitimate rows
   only, for FPR) in completed blocks of `THRESHOLD_BLOCK` rows; a row alerts when ``score >= threshold``.
   The first block is warm-up and is not tested. Thresholds are therefore *predictable* (fixed before the
   row is seen), which is what the martingale argument below needs, and cost compares ranking quality,
   not threshold choice.
2. *Gain per observation, in [-1, 1]* (`cost_values`, `recall_values`): each row gets a value, higher is better, and
   the gain is challenger value minus champion value. Expected cost: ``cost`` is the review cost for an
   alert, the missed cost (amount clipped at ``amountCap``, or the constant) for an unflagged fraud, else
   0; the value is ``-(cost - kappa * (flagged - alert_rate))`` scaled by ``bound * (1 + 2 alert_rate)``
   (``bound`` = the largest cost of one transaction). The correction is zero on average at the exact
   threshold; ``kappa``, the predictable cost of one more alert at the threshold
   (`marginal_alert_cost`), makes it cancel to first order what an arm gains or loses from a threshold
   estimated a little low or high. Recall: a fraud is worth 1 if flagged; a legitimate row
   ``-odds * (flagged - fpr)``, the same correction in recall units (`recall_values`). Without the
   corrections, threshold noise alone made equal models win ~6 % of A/A runs (recall) and pushed split
   mode's false promotions up.
   In shadow mode both arms scored the same requests and the gain is per request (paired). In split mode
   the arms saw different requests: observation ``j`` pairs a block of ``k_b`` challenger rows with a block
   of ``k_a`` champion rows (``k_a : k_b`` = the traffic ratio, e.g. 9 : 1) in arrival order, gain =
   difference of block means. Each pair is formed once and never changes, so every look extends one
   fixed sequence.
3. *Betting.* Under H0 "the challenger is not better" (``E[g_t | past] <= 0``) the test bets on the gains.
   A mixture of `HORIZONS` bettors (1k, 4k, 16k, 64k, 256k observations, bet caps `CAPS`) each stakes the
   predictable fraction ``lambda_{k,t} = min(sqrt(2 log(1/alpha) / (v_{t-1} h_k)), c_{k,t})`` of its wealth, with
   ``v_{t-1} = (sum_{i<t} g_i^2 + 0.3) / t`` (earlier gains plus 0.3 of a pseudo-observation of a full-range gain);
   the cap ``c_{k,t}`` is ``c_k``, and for the components that may bet 0.97 it rises to 0.99 once an earlier gain
   was ``<= -1/2`` (`CAPS_AFTER_LOSS`: see *Power*):
   ``W^k_t = prod_{i<=t} (1 + lambda_{k,i} g_i)`` and the test's wealth is ``W_t = (1/K) sum_k W^k_t``.
   *Validity*: each bet uses only earlier gains and lies in ``[0, c_{k,t}]`` with ``c_{k,t} < 1``, so every factor
   is ``> 0`` and, under H0, ``E[W^k_t | past] <= W^k_{t-1}``: each ``W^k`` is a nonnegative
   supermartingale starting at 1, and so is their fixed-weight average. Ville's inequality gives
   ``P(sup_t W_t >= 1/alpha) <= alpha``: the always-valid p-value ``p_t = 1 / max_{s<=t} W_s`` may be checked
   after every row, at every look, forever. Nothing about the variance estimate, the horizons or the
   gains' distribution has to be right for that; they only set the power. Against a null ``m`` other than
   0 (for the interval) the gains are ``g - m`` and the caps ``c_{k,t} / (1 + m)``, so factors stay positive.
   *Power*: a bet tuned to horizon ``h`` brings ``log W`` to ``log(1/alpha)`` at ``h`` just when the paired
   z statistic reaches ``sqrt(2 log(1/alpha))`` (2.45 at alpha 0.05); the mixture pays ``log K`` for not
   knowing the effect size. Measured against the previous bettor (aGRAPA, Waudby-Smith & Ramdas, JRSS-B
   2024), which bets the noisy plug-in ``mean / second moment`` and so hardly bets early: the labels for
   80 % power fell from ~2x to 1.6-1.8x those of the fixed-horizon paired z-test (which may not peek) on
   the synthetic bench and the real credit-card replays (``kingmaker bench promotion``), at 2.6-2.9 % A/A
   false promotions (1,500 runs per mode, alpha 0.05).
   *A planned horizon* (``plannedLabels``, a power calculation's n: the labels a fixed-horizon test would need
   for the smallest effect worth detecting) adds one bettor with `PLANNED_WEIGHT` of the starting wealth; the even
   mixture keeps the rest, so larger effects still decide early and a wrong plan costs power, never validity (the
   weights are fixed in advance). It bets the constant tuned to `PLANNED_STRETCH` x that n or, when larger, the
   `catch_up_bet`: the bet that replicates a one-look test at `aim_stretch` x n (1.09 at alpha 0.05) at its level
   ``alpha * PLANNED_WEIGHT`` (the slope of ``log P(S_aim >= c | S_{t-1})`` under a random walk with the running
   variance), so a run that falls behind that test's path bets more instead of being written off. A constant bet cannot
   do better than the SPRT's ~1.4x the z-test's labels (8.6 / delta^2 against 6.2 / delta^2 for 80 % power);
   aiming at a known horizon can. Measured in the benchmark where the plan matches the effect: 1.31x and 1.37x
   the z-test's labels for 80 % power on the synthetic bench, below the best constant bet picked in hindsight
   (1.40x, 1.50x; 1.44x and 1.57x before the catch-up bet), and 1.40-1.55x on the real data's sparse gains
   (800 synthetic / 600 real runs per cell, each ratio +-7 % at 95 %), where one early bet is already at its
   cap and the catch-up bet adds nothing. On the real data nearly all evidence is a fraud one arm caught and the
   other missed (gain ~0.97); one bet can at most double the wealth, so 1/alpha = 20 needs at least five of them
   net, where the one-look z-test rejects after three. That is not betting's fault: four straight wins are a 1/16
   event under H0, so no test valid at every look may always reject on them.
   `k8s.frontier` solves that sign model exactly: the best constant bet needs 1.54-1.55x, no valid test of the
   signs less than 1.35-1.44x. The most powerful test there rejects on five straight wins but after one early loss
   already on seven, where a constant 0.9 needs nine: a lost discordant fraud should raise the bet, not lower it
   (as the variance estimate does). Hence the caps that rise after a gain <= -1/2, and the smaller prior (0.3, from
   1.0) that lets the first wins be bet nearly in full. Together they took the planned test from 1.54-1.57x to
   1.49-1.51x on the real data (same seeds, 300 replays), moved the synthetic cells by 1-3 % either way, and kept
   A/A false promotions at or below 4 % (200 runs per cell; at most 4.0 % over 800 synthetic / 600 real).
   Then the caps themselves rose from 0.9 (0.97 after a loss) to 0.97 (0.99) and the planned bettor's share from
   0.7 to 0.8, so that five straight wins clear the bar on the planned bettor alone (`PLANNED_WEIGHT`): over three
   fresh seed sets (1,800 replays per cell) the real cells went from 1.52x, 1.57x, 1.61x to 1.47x, 1.53x, 1.61x
   and the synthetic ones from 1.34x, 1.44x to 1.33x, 1.42x. The 15.6 % cell stays: there about half the runs lose
   a discordant fraud before deciding, and the sign model's best test, which bets ~0.8 until the first loss and
   everything after it, reaches 1/alpha on five straight wins with no margin left for the 20 % of the wealth kept
   for larger effects or for the small gains' noise.
   "The challenger is worse" is the mirror test on ``-g``; each is run at level ``alpha``. The reported
   interval is the confidence sequence obtained by inverting the same tests over the null value
   (bisection), at level ``1 - 2 alpha`` two-sided.

Bounded gains make the test exact for heavy-tailed amounts and 2 % fraud rates alike; the price is that
amounts are clipped at ``amountCap``. One approximation remains and is measured rather than assumed: a
threshold estimated from finitely many rows makes an arm's conditional cost fluctuate around the one at
the exact operating point, so "equal models" is not exactly the martingale null. With the corrections
above, estimated thresholds promote equal models about as rarely as the true thresholds would: measured
at alpha 0.05 over 1,500 A/A runs of 50,000 transactions with the mixture bettor, 2.9 % in shadow mode,
2.6 % in split mode and 2.6 % in paired split mode (95 % intervals within [1.9 %, 3.9 %]), before the caps
that rise after a big loss, the smaller prior and the catch-up bet; with them the benchmark's A/A cells read
2.5-3.4 % unplanned and 3.2-4.9 % planned on the synthetic bench (800 runs each; the one-look z-test rejects 5.4 %
of the planned paired-split cell's runs at its horizon), at most 4.3 % on the real data (600 replays), and the
slow tests (2,000 A/A runs, at most 5 %) keep passing.

PR-AUC: an alpha-spending plan (approximately valid)
----------------------------------------------------
Average precision is a ranking statistic over the whole sample, not a mean of bounded per-row terms, and
no cheap always-valid test for it is known to us. It therefore uses a group-sequential plan:
``plannedAnalyses`` equally spaced analyses up to ``horizonPerArm`` labelled rows per arm, O'Brien-Fleming
boundaries ``z_k = C * sqrt(K / k)`` with ``C`` computed exactly for ``K`` looks (`obf_constant`), and
``z = (AP_challenger - AP_champion) / SE`` with a bootstrap SE (paired resampling in shadow mode). Between
planned analyses the controller holds; after the last one the plan is spent. Valid only as far as the
AP difference is approximately normal, which with 2 % fraud takes many frauds: measured on 300 A/A shadow
runs with 5 analyses up to 5,000 rows per arm, 4.7 % false promotions but 8.3 % false rollbacks. Prefer
expected cost or recall at a fixed FPR.

Everything here is pure numpy/scipy, works on ``(runs, n)`` arrays so the benchmark simulates hundreds of
experiments at once with the very code `decide` runs, and has no I/O. The functions take plain numbers
(rates, costs, alpha, plan sizes), never the policy: `k8s.decide` reads the `Policy` and passes them in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, special, stats

#: Rows per threshold block: an arm's threshold is refreshed every this many of its rows, from all its
#: earlier rows; the first block only warms the threshold up.
THRESHOLD_BLOCK = 500
#: The betting mixture's components: planned horizons (observations) and each one's largest bet. Short
#: horizons bet at most 0.5 (one observation can at worst halve that component's wealth): they act while
#: thresholds warm up, and on dense gains a larger cap only over-bets. Long horizons may bet up to 0.97: on
#: sparse gains (0.1-0.2 % fraud) a decision rests on a handful of discordant frauds, and a cap of 0.5 would
#: need ~8 of them in a row where 0.97 needs 5 with room for the small gains' noise (0.9 barely reached the bar).
HORIZONS: tuple[float, ...] = (1_000.0, 4_000.0, 16_000.0, 64_000.0, 256_000.0)
CAPS: tuple[float, ...] = (0.5, 0.5, 0.97, 0.97, 0.97)
#: Each cap once an earlier gain was ``<= -BIG_LOSS`` (a lost discordant fraud on sparse gains): the 0.97 caps rise
#: to 0.99, so the wins after a loss win it back sooner (the sign model's best test; module docstring). Dense
#: gains hardly reach a cap, so there it changes little.
CAPS_AFTER_LOSS: tuple[float, ...] = (0.5, 0.5, 0.99, 0.99, 0.99)
BIG_LOSS = 0.5
#: With a planned horizon (the policy's ``plannedLabels``: the labels a fixed-horizon test would need, i.e. a
#: power calculation's n), one more bettor gets this share of the starting wealth and the even mixture the rest.
#: It is tuned to ``PLANNED_STRETCH`` x that n and to the level ``alpha * PLANNED_WEIGHT`` (its share of the
#: bar), where the sequential test can reach 80 % power: measured on simulated sparse gains, 1.0-1.6 x gave the
#: same labels for 80 % power, 0.8 x and 2 x needed more. With 0.8 of the wealth and bets of 0.97 it clears 1/alpha
#: on five straight discordant wins alone (0.8 x (1 + 0.97 x 0.97)^5 = 22 > 20); with 0.7 and 0.9 it reached 16, and
#: whether the rest came from the even mixture was left to the small gains' noise.
PLANNED_WEIGHT = 0.8
PLANNED_STRETCH = 1.3
PLANNED_CAP = 0.97
PLANNED_CAP_AFTER_LOSS = 0.99
#: The planned bettor also aims at the fixed-horizon verdict at `aim_stretch` x the plan (`catch_up_bet`): the n
#: where a one-look test at its level ``alpha * PLANNED_WEIGHT`` has the plan's power `PLAN_POWER`,
#: ``((z_{0.8 alpha} + z_0.8) / (z_alpha + z_0.8))^2`` (1.09 at alpha 0.05, 1.05 at 0.01, 1.12 at 0.1). Past that n
#: it keeps aiming ``AIM_FLOOR`` x the plan ahead. Measured with the catch-up bet alone (no constant floor) on 200
#: synthetic shadow runs: aimed at 1.0x, 1.15x and 1.3x the plan it needed 1.66x, 1.26x and 1.30x the z-test's labels
#: for 80 % power; with the floor, keeping 0.25x or 0.5x of the plan ahead past it (instead of 0.05x) needed 1-5 %
#: more on the synthetic cells (800 runs each).
PLAN_POWER = 0.8
AIM_FLOOR = 0.05
#: The bets' second-moment regulariser: 0.3 of a pseudo-observation of a full-range gain (|g| = 1), so a short
#: run of near-zero gains cannot make the bets large before the first large gain is seen. 1.0 held back the first
#: bets on sparse gains, where five straight wins must reach 1/alpha (see the module docstring).
PRIOR_SECOND_MOMENT = 0.3
#: Components' log-wealth is clipped here before averaging (exp overflows near 709); only values far
#: above any rejection bar (log 1/alpha) are affected, and clipping only lowers the wealth.
LOG_WEALTH_CEILING = 500.0

Floats = NDArray[np.float64]
Bools = NDArray[np.bool_]


# --- matched operating point -------------------------------------------------------------------

def block_thresholds(scores: Floats, rate: float, *, counted: Bools | None = None,
                     block: int = THRESHOLD_BLOCK) -> Floats:
    """Predictable thresholds: for each row, the k-th largest earlier counted score of its arm.

    ``scores`` has shape ``(runs, n)`` (or ``(n,)``). Row ``i`` in block ``j = i // block`` gets the
    ``k = max(1, round(rate * N))``-th largest of the ``N`` counted scores in rows ``[0, j * block)``
    (``counted`` selects rows, e.g. legitimate ones for an FPR; default all). Rows of block 0, and rows
    whose earlier blocks hold no counted score, get ``+inf`` (they never alert and are not tested).
    """
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    runs, n = s.shape
    use = np.ones_like(s, dtype=bool) if counted is None else np.atleast_2d(np.asarray(counted, dtype=bool))
    out = np.full((runs, n), np.inf)
    keep = max(1, round(rate * n) + 1)  # enough candidates for the largest k ever needed
    top = np.full((runs, 0), -np.inf)
    seen = np.zeros(runs, dtype=np.int64)
    for j in range(1, math.ceil(n / block)):
        prev = slice((j - 1) * block, j * block)
        fresh = np.where(use[:, prev], s[:, prev], -np.inf)
        top = -np.sort(-np.concatenate([top, fresh], axis=1), axis=1)[:, :keep]
        seen += use[:, prev].sum(axis=1)
        k = np.maximum(1, np.rint(rate * seen).astype(np.int64))
        tau = np.take_along_axis(top, np.minimum(k, top.shape[1])[:, None] - 1, axis=1)[:, 0]
        out[:, j * block:(j + 1) * block] = np.where(seen > 0, tau, np.inf)[:, None]
    return out.reshape(np.shape(scores)) if np.ndim(scores) == 1 else out


def transaction_costs(alerts: Bools, labels: NDArray[np.int8] | Bools, missed_costs: Floats,
                      review_cost: float) -> Floats:
    """Cost of each transaction: review cost if flagged, its missed cost if an unflagged fraud, else 0."""
    return np.where(alerts, review_cost, np.where(np.asarray(labels, dtype=bool), missed_costs, 0.0))


def _band_sums(scores: Floats, lo: Floats, hi: Floats, payloads: tuple[Floats, ...],
               block: int) -> list[Floats]:
    """For rows of block ``j``: the sum of each payload over rows in blocks ``< j`` with ``lo <= score < hi``.

    ``lo``/``hi`` are per-row thresholds, constant within a block. Only rows that can fall in some band
    (score at least the lowest ``lo`` ever used) are scanned, so the cost is about ``rate * n`` per block.
    """
    runs, n = scores.shape
    floor = np.min(np.where(np.isfinite(lo), lo, np.inf), axis=1)
    candidate = scores >= floor[:, None]
    width = int(candidate.sum(axis=1).max(initial=0))
    order = np.argsort(~candidate, axis=1, kind="stable")[:, :width]  # candidates first, in time order
    valid = np.take_along_axis(candidate, order, axis=1)
    cand_scores = np.take_along_axis(scores, order, axis=1)
    cand_payloads = [np.take_along_axis(p, order, axis=1) for p in payloads]
    out = [np.zeros((runs, n)) for _ in payloads]
    for j in range(1, math.ceil(n / block)):
        start = j * block
        band = (valid & (order < start) & (cand_scores >= lo[:, start, None])
                & (cand_scores < hi[:, start, None]))
        for total, payload in zip(out, cand_payloads, strict=True):
            total[:, start:start + block] = np.where(band, payload, 0.0).sum(axis=1)[:, None]
    return out


def local_odds(scores: Floats, labels: Bools, fpr: float, *, block: int = THRESHOLD_BLOCK) -> Floats:
    """Predictable frauds-per-legitimate ratio near an arm's FPR threshold, per row, in [0, 1].

    For rows of block ``j``: among the arm's rows in blocks ``< j`` scored between its thresholds for
    FPR ``2 * fpr`` and ``fpr / 2``, ``(frauds + 1/2) / (legitimate + 1)``, clipped to [0, 1]. It estimates
    ``d TP / d FP`` at the threshold (the slope of the ROC curve in count units), the exchange rate that
    makes a lucky or unlucky threshold neither help nor hurt (`recall_values`).
    """
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    y = np.atleast_2d(np.asarray(labels, dtype=bool))
    lo = block_thresholds(s, min(0.5, 2 * fpr), counted=~y, block=block)
    hi = block_thresholds(s, fpr / 2, counted=~y, block=block)
    frauds, legit = _band_sums(s, lo, hi, (y.astype(np.float64), (~y).astype(np.float64)), block)
    out = np.clip((frauds + 0.5) / (legit + 1.0), 0.0, 1.0)
    out[:, :block] = 0.0
    return out.reshape(np.shape(scores)) if np.ndim(scores) == 1 else out


def recall_values(scores: Floats, labels: Bools, *, fpr: float,
                  block: int = THRESHOLD_BLOCK) -> tuple[Floats, Bools, Bools]:
    """Per-row value whose mean is ``fraud share * recall`` at the matched FPR; tested rows; detections.

    A fraud is worth 1 if flagged. A legitimate row is worth ``-odds * (flagged - fpr)``: zero on average at
    the exact FPR threshold, and it cancels, to first order, the recall an arm gains from a threshold
    estimated a little low (more false positives) or loses from one a little high. Without it, estimated
    thresholds alone made equal models "win" about 6 % of A/A runs at alpha 0.05 (measured); with it, as
    often as with the true thresholds (about 2.5 %).
    """
    y = np.asarray(labels, dtype=bool)
    tau = block_thresholds(scores, fpr, counted=~y, block=block)
    flagged = scores >= tau
    odds = local_odds(scores, y, fpr, block=block)
    values = np.where(y, flagged.astype(np.float64), -odds * (flagged - fpr))
    return values, np.isfinite(tau), flagged


def marginal_alert_cost(scores: Floats, labels: Bools, missed_costs: Floats, *, alert_rate: float,
                        review_cost: float, block: int = THRESHOLD_BLOCK) -> Floats:
    """Predictable cost of one more alert at an arm's threshold, per row: review cost minus missed cost saved.

    For rows of block ``j``: ``review_cost - (missed costs of frauds) / (rows + 1)`` over the arm's rows in
    blocks ``< j`` scored between its thresholds for alert rates ``2 * rate`` and ``rate / 2``. It is the
    exchange rate that makes a threshold estimated a little low (more alerts: more reviews, fewer misses) or
    a little high neither help nor hurt to first order (`cost_values`).
    """
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    y = np.atleast_2d(np.asarray(labels, dtype=bool))
    m = np.atleast_2d(np.asarray(missed_costs, dtype=np.float64))
    lo = block_thresholds(s, min(0.5, 2 * alert_rate), block=block)
    hi = block_thresholds(s, alert_rate / 2, block=block)
    saved, rows = _band_sums(s, lo, hi, (np.where(y, m, 0.0), np.ones_like(s)), block)
    out = review_cost - saved / (rows + 1.0)
    out[:, :block] = review_cost
    return out.reshape(np.shape(scores)) if np.ndim(scores) == 1 else out


def cost_values(scores: Floats, labels: Bools, missed_costs: Floats, *, alert_rate: float, review_cost: float,
                bound: float, block: int = THRESHOLD_BLOCK) -> tuple[Floats, Bools, Bools]:
    """Per-row expected-cost values (higher is better) at the matched ``alert_rate``; tested rows; alerts.

    The value is ``-(cost - kappa * (flagged - alert_rate)) / cost_scale(bound, alert_rate)``, with ``bound``
    the largest cost one transaction can have. Works on ``(n,)`` or ``(runs, n)`` arrays; `decide` and the
    simulator both call it (through `k8s.decide.criterion_values`).
    """
    y = np.asarray(labels, dtype=bool)
    tau = block_thresholds(scores, alert_rate, block=block)
    flagged = scores >= tau
    cost = transaction_costs(flagged, y, missed_costs, review_cost)
    kappa = marginal_alert_cost(scores, y, missed_costs, alert_rate=alert_rate, review_cost=review_cost, block=block)
    corrected = cost - kappa * (flagged - alert_rate)  # in [-bound * r, bound * (1 + r)]
    return -corrected / cost_scale(bound, alert_rate), np.isfinite(tau), flagged


def cost_scale(bound: float, alert_rate: float) -> float:
    """Cost values are ``-corrected cost / cost_scale``; the scale keeps their differences in [-1, 1]."""
    return bound * (1.0 + 2.0 * alert_rate)


def gain_scale(*, recall: bool, paired: bool) -> float:
    """Divide value differences by this to keep gains in [-1, 1].

    Cost values (`cost_values`) lie in [-(1 + r), r] / (1 + 2r) for alert rate r, so any difference is in
    [-1, 1]. Recall values (`recall_values`) lie in [-odds, 1]; paired rows share their label, so a
    difference is again in [-1, 1], but block means of different rows (split mode) can differ by up to 2.
    """
    return 2.0 if recall and not paired else 1.0


# --- pairing -----------------------------------------------------------------------------------

def split_ratio(challenger_weight: float) -> tuple[int, int]:
    """Rows per pair ``(champion, challenger)`` for a split: 0.1 -> (9, 1), 0.5 -> (1, 1), 0.8 -> (1, 4)."""
    if not 0.0 < challenger_weight < 1.0:
        raise ValueError(f"challenger weight must be in (0, 1) for a split, got {challenger_weight}")
    if challenger_weight <= 0.5:
        return max(1, round((1 - challenger_weight) / challenger_weight)), 1
    return 1, max(1, round(challenger_weight / (1 - challenger_weight)))


def pair_blocks(champion: Floats, challenger: Floats, ratio: tuple[int, int]) -> tuple[Floats, Floats]:
    """Split mode: block means ``(champion, challenger)`` of consecutive ``ratio`` rows, one per pair.

    Inputs are ``(runs, n_arm)`` arrays in arrival order; the number of pairs is limited by the arm that
    runs out first. Pair ``j`` always uses the same rows, however many rows arrive later.
    """
    ka, kb = ratio
    a = np.atleast_2d(champion)
    b = np.atleast_2d(challenger)
    pairs = min(a.shape[1] // ka, b.shape[1] // kb)
    a_mean = a[:, :pairs * ka].reshape(a.shape[0], pairs, ka).mean(axis=2)
    b_mean = b[:, :pairs * kb].reshape(b.shape[0], pairs, kb).mean(axis=2)
    return a_mean, b_mean


def planned_observations(labels: int | None, ratio: tuple[int, int] | None) -> float | None:
    """The planned horizon in the test's observations: labelled transactions when paired (``ratio`` None), pairs
    of blocks in split mode (``ratio`` = `split_ratio`: one observation per ``ka + kb`` transactions)."""
    if labels is None:
        return None
    return float(labels) if ratio is None else labels / sum(ratio)


# --- testing by betting ------------------------------------------------------------------------

def _before(x: Floats) -> Floats:
    """``out[..., t] = sum(x[..., :t])``: sums over earlier observations only (what makes a bet predictable)."""
    out = np.zeros_like(x)
    np.cumsum(x[..., :-1], axis=-1, out=out[..., 1:])
    return out


def predictable_second_moment(y: Floats, prior: float = PRIOR_SECOND_MOMENT) -> Floats:
    """``(sum_{i<t} y_i^2 + prior) / t`` for t = 1..n: earlier observations plus ``prior``."""
    count = np.arange(1, y.shape[-1] + 1, dtype=np.float64)
    return (_before(y * y) + prior) / count


@dataclass(frozen=True)
class Bettor:
    """One component of the mixture: it bets ``sqrt(2 log(1 / level) / (v horizon))``, at most ``cap`` (``after``
    once a gain was ``<= -BIG_LOSS``), and, when ``aim`` is set, at least the `catch_up_bet` towards ``aim``."""

    horizon: float
    cap: float
    after: float
    weight: float
    level: float
    aim: float | None = None


def bettors(alpha: float, planned: float | None = None) -> tuple[Bettor, ...]:
    """The mixture's components: the even mixture over `HORIZONS`, and with a ``planned`` horizon (observations;
    see `PLANNED_WEIGHT`) one more bettor that holds most of the wealth."""
    spread = 1.0 if planned is None else 1.0 - PLANNED_WEIGHT
    out = [Bettor(h, c, after, spread / len(HORIZONS), alpha)
           for h, c, after in zip(HORIZONS, CAPS, CAPS_AFTER_LOSS, strict=True)]
    if planned is not None:
        plan = max(planned, 1.0)
        out.append(Bettor(PLANNED_STRETCH * plan, PLANNED_CAP, PLANNED_CAP_AFTER_LOSS, PLANNED_WEIGHT,
                          alpha * PLANNED_WEIGHT, aim_stretch(alpha) * plan))
    return tuple(out)


def aim_stretch(alpha: float) -> float:
    """Where the planned bettor aims, in plans: the n at which a one-look z-test at its share of the level,
    ``alpha * PLANNED_WEIGHT``, has the power `PLAN_POWER` that a one-look test at ``alpha`` has at the plan."""
    power = stats.norm.isf(1.0 - PLAN_POWER)
    return float(((stats.norm.isf(alpha * PLANNED_WEIGHT) + power) / (stats.norm.isf(alpha) + power)) ** 2)


def catch_up_bet(y: Floats, second_moment: Floats, aim: float, level: float) -> Floats:
    """The bet that keeps a bettor's wealth near ``P(S_aim >= c | S_{t-1}) / level``: a one-look test at ``aim``
    observations and ``level``, replicated by betting.

    Under H0's worst case the sum ``S`` of the gains is a random walk with the step variance ``v`` (the predictable
    second moment), so ``c = z_level sqrt(v aim)`` is that test's bar and the chance of clearing it from
    ``S_{t-1}`` with ``r = max(aim - t + 1, AIM_FLOOR aim)`` steps left is ``Phi(d)``,
    ``d = (S_{t-1} - c) / sqrt(v r)``. The bet that follows it is its log-derivative,
    ``phi(d) / (Phi(d) sqrt(v r))``: about the constant bet tuned to ``aim`` at the start, larger when behind
    (a lost discordant fraud raises it), smaller when far ahead. The caller bounds it: any predictable bet in
    ``[0, cap]`` keeps the test valid, so the Gaussian model only sets the power.
    """
    before = np.arange(y.shape[-1], dtype=np.float64)
    spread = np.sqrt(second_moment * np.maximum(aim - before, AIM_FLOOR * aim))
    d = (_before(y) - stats.norm.isf(level) * np.sqrt(second_moment * aim)) / spread
    return np.asarray(np.exp(stats.norm.logpdf(d) - special.log_ndtr(d)) / spread, dtype=np.float64)


def log_wealth(gains: Floats, null: float = 0.0, *, alpha: float, planned: float | None = None) -> Floats:
    """``log W_t`` of the horizon mixture against H0 ``E[g | past] <= null``, for gains in [-1, 1].

    ``gains`` has shape ``(runs, n)`` or ``(n,)``; the result has the same shape. The test rejects at level
    ``alpha`` once ``log W_t >= log(1 / alpha)``; ``alpha`` and ``planned`` (observations) only tune the bets
    (see the module docstring): any fixed weights of nonnegative supermartingales keep it valid.
    """
    y = np.asarray(gains, dtype=np.float64) - null  # in [-(1 + null), 1 - null]
    if y.shape[-1] == 0:
        return y.copy()
    second_moment = predictable_second_moment(y)
    root = np.sqrt(2.0 / second_moment)
    lost = _before((y <= -BIG_LOSS).astype(np.float64)) > 0  # a big loss before t: predictable
    total = np.zeros_like(y)
    step = np.empty_like(y)
    for b in bettors(alpha, planned):
        # the bet, lambda_{k,t} = min(sqrt(2 log(1/level) / (v h)) [or the catch-up bet, if larger], cap [after a loss])
        np.multiply(root, math.sqrt(math.log(1.0 / b.level) / b.horizon), out=step)
        if b.aim is not None:
            np.maximum(step, catch_up_bet(y, second_moment, b.aim, b.level), out=step)
        caps = np.where(lost, b.after, b.cap) if b.after != b.cap else b.cap
        np.minimum(step, caps / (1.0 + null), out=step)
        step *= y
        np.log1p(step, out=step)
        np.cumsum(step, axis=-1, out=step)
        np.minimum(step, LOG_WEALTH_CEILING, out=step)
        total += b.weight * np.exp(step)
    return np.asarray(np.log(total), dtype=np.float64)


def p_value(gains: Floats, null: float = 0.0, *, alpha: float, planned: float | None = None) -> float:
    """Always-valid p-value for H0 ``E[g] <= null``: ``min(1, 1 / max_t W_t)`` (exact at ``alpha``, which tunes the bets)."""
    if np.size(gains) == 0:
        return 1.0
    return float(min(1.0, math.exp(-max(0.0, float(np.max(log_wealth(gains, null, alpha=alpha, planned=planned)))))))


def _lower_bound(gains: Floats, alpha: float, planned: float | None) -> float:
    """Largest null ``m`` that the bettor rejects at level ``alpha`` (the CS's lower end), -1 if none."""
    threshold = math.log(1.0 / alpha)

    def rejected(m: float) -> bool:
        return bool(np.max(log_wealth(gains, m, alpha=alpha, planned=planned)) >= threshold)

    lo, hi = -1.0, 1.0
    if not rejected(lo + 1e-9):
        return -1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if rejected(mid) else (lo, mid)
    return lo


@dataclass(frozen=True)
class BettingResult:
    """The always-valid comparison of mean gains (challenger minus champion, normalised to [-1, 1])."""

    n: int  # observations (rows or pairs) in the test
    mean: float  # mean gain; > 0 means the challenger did better
    lower: float  # lower end of the (1 - 2 alpha) confidence sequence for the mean gain
    upper: float
    p_better: float  # always-valid p-value of H0 "challenger not better" (1 / the largest wealth so far)
    p_worse: float  # always-valid p-value of H0 "challenger not worse"
    alpha: float

    @property
    def better(self) -> bool:
        return self.p_better <= self.alpha

    @property
    def worse(self) -> bool:
        return self.p_worse <= self.alpha


def betting_test(gains: Floats, alpha: float, planned: float | None = None) -> BettingResult:
    """Both one-sided betting tests on a 1-d sequence of gains, plus the confidence sequence; ``planned``: the
    planned horizon in observations (`bettors`)."""
    g = np.asarray(gains, dtype=np.float64).ravel()
    if g.size == 0:
        return BettingResult(0, 0.0, -1.0, 1.0, 1.0, 1.0, alpha)
    if np.any(np.abs(g) > 1.0 + 1e-12):
        raise ValueError("gains must lie in [-1, 1]")
    return BettingResult(
        n=int(g.size), mean=float(g.mean()),
        lower=_lower_bound(g, alpha, planned), upper=-_lower_bound(-g, alpha, planned),
        p_better=p_value(g, alpha=alpha, planned=planned), p_worse=p_value(-g, alpha=alpha, planned=planned),
        alpha=alpha,
    )


# --- PR-AUC: group-sequential plan -----------------------------------------------------------

@lru_cache(maxsize=64)
def obf_constant(alpha: float, analyses: int, *, step: float = 0.01) -> float:
    """O'Brien-Fleming constant ``C``: ``P(exists k <= K: Z_k >= C sqrt(K / k)) = alpha`` under H0.

    With equally spaced information, ``Z_k sqrt(k) = S_k`` is a Gaussian random walk and the boundary is
    the constant ``b = C sqrt(K)`` on ``S``; the crossing probability is computed by numerical integration
    of the walk's sub-boundary density (Armitage, McPherson & Rowe 1969) and solved for ``b``.
    """
    offsets = np.arange(-8.0, 8.0 + step / 2, step)
    kernel = stats.norm.pdf(offsets) * step  # one N(0, 1) step of the walk, on the grid
    half = offsets.size // 2

    def crossing(b: float) -> float:
        grid = np.arange(b - step / 2, -8.0 * math.sqrt(analyses), -step)[::-1]  # midpoints below b
        density = stats.norm.pdf(grid)
        for _ in range(analyses - 1):
            density = np.convolve(density, kernel)[half:half + grid.size]
        return 1.0 - float(density.sum() * step)

    b = optimize.brentq(lambda b: crossing(b) - alpha, 0.5, 10.0, xtol=1e-7)
    return float(b / math.sqrt(analyses))


def obf_boundary(alpha: float, analyses: int, k: int) -> float:
    """The z boundary at analysis ``k`` of ``analyses`` (1-based)."""
    return obf_constant(alpha, analyses) * math.sqrt(analyses / k)


def average_precision(scores: Floats, labels: Floats | Bools) -> Floats:
    """Average precision (scikit-learn's definition, ties grouped) of each row of ``(runs, n)`` arrays."""
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    y = np.atleast_2d(np.asarray(labels, dtype=np.float64))
    order = np.argsort(-s, axis=1, kind="stable")
    s = np.take_along_axis(s, order, axis=1)
    y = np.take_along_axis(y, order, axis=1)
    n = s.shape[1]
    tp = np.cumsum(y, axis=1)
    idx = np.arange(n)
    is_end = np.ones_like(s, dtype=bool)
    is_end[:, :-1] = s[:, 1:] != s[:, :-1]
    end_of = np.minimum.accumulate(np.where(is_end, idx, n)[:, ::-1], axis=1)[:, ::-1]  # group end per row
    precision_at_end = np.take_along_axis(tp / (idx + 1), end_of, axis=1)
    positives = y.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = (y * precision_at_end).sum(axis=1) / positives
    return np.where(positives > 0, ap, np.nan)


@dataclass(frozen=True)
class PlanResult:
    """One analysis of the PR-AUC plan."""

    champion: float  # AP of each arm
    challenger: float
    se: float  # bootstrap SE of the difference
    z: float
    boundary: float  # |z| needed at this analysis
    analysis: int  # 1-based
    analyses: int

    @property
    def better(self) -> bool:
        return self.z >= self.boundary

    @property
    def worse(self) -> bool:
        return self.z <= -self.boundary


def pr_auc_analysis(champion: tuple[Floats, Floats], challenger: tuple[Floats, Floats], *, paired: bool,
                    alpha: float, analysis: int, analyses: int, resamples: int = 200) -> PlanResult:
    """Analysis ``analysis`` of the plan: AP difference, bootstrap SE, z against the OBF boundary.

    ``champion``/``challenger`` are ``(scores, labels)``. The bootstrap is seeded from the sample sizes so
    that the same data always give the same answer.
    """
    (sa, ya), (sb, yb) = champion, challenger
    rng = np.random.default_rng([len(sa), len(sb), analysis])
    ap_a = float(average_precision(sa, ya)[0])
    ap_b = float(average_precision(sb, yb)[0])
    diffs = []
    for start in range(0, resamples, 25):  # chunks keep memory small for 50k-row windows
        size = min(25, resamples - start)
        ia = rng.integers(0, len(sa), size=(size, len(sa)))
        ib = ia if paired else rng.integers(0, len(sb), size=(size, len(sb)))
        diffs.append(average_precision(sb[ib], yb[ib]) - average_precision(sa[ia], ya[ia]))
    d = np.concatenate(diffs)
    se = float(np.nanstd(d, ddof=1))
    z = (ap_b - ap_a) / se if se > 0 else 0.0
    return PlanResult(ap_a, ap_b, se, z, obf_boundary(alpha, analyses, analysis), analysis, analyses)
