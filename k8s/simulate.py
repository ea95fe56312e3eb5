"""Synthetic champion/challenger traffic and whole experiments, vectorised over many runs (pure numpy).

Traffic: a fraction ``fraud_rate`` of transactions is fraud. Each arm's latent score is
``separation * is_fraud + sqrt(rho) * shared + sqrt(1 - rho) * own`` with standard normal noises, so each
class is N(0, 1) (legitimate) or N(separation, 1) (fraud) and the two arms' scores correlate ``rho`` within
a class, as two models trained on the same features do; the served score is ``sigmoid(latent - 4)``. A/A
means equal separations (in shadow mode, ``rho = 1`` would make the arms literally identical). Amounts are
log-normal (heavy-tailed), independent of the scores.

Because the classes are Gaussian, the expected cost at a matched alert rate is known exactly
(`expected_cost`), and `separation_for_cost` finds the challenger separation with, say, a 10 % lower
expected cost. `run_experiments` plays the controller: it calls the same statistics as `decide` at every
look and returns each run's first verdict, so the benchmark measures the code that runs in production
(a unit test checks the two agree look by look).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, stats

from k8s.decide import criterion_values, gain_scale
from k8s.policy import CostMatrix, Criterion, Policy
from k8s.sequential import log_wealth, pair_blocks, planned_observations, split_ratio, transaction_costs

Floats = NDArray[np.float64]
Bools = NDArray[np.bool_]
Ints = NDArray[np.int64]


@dataclass(frozen=True)
class Scenario:
    """Two arms' score distributions and the transaction amounts."""

    champion_separation: float = 2.5  # fraud-vs-legit shift of the champion's latent score (N(0,1) noise)
    challenger_separation: float = 2.5
    correlation: float = 0.85  # within-class correlation of the arms' latent scores
    fraud_rate: float = 0.02
    amount_log_mean: float = 3.5  # log-normal amounts: median ~ 33, mean ~ 88, long right tail
    amount_log_sigma: float = 1.4


def _sigmoid(x: Floats) -> Floats:
    return np.asarray(1.0 / (1.0 + np.exp(-(x - 4.0))), dtype=np.float64)


def mean_missed_cost(cost: CostMatrix, scenario: Scenario) -> float:
    """E[cost of one missed fraud]: the constant, or E[min(amount, cap)] for log-normal amounts."""
    if cost.amount_feature is None or cost.amount_cap is None:
        return cost.missed_fraud_cost
    m, s, cap = scenario.amount_log_mean, scenario.amount_log_sigma, cost.amount_cap
    z = (math.log(cap) - m) / s
    return float(math.exp(m + s * s / 2) * stats.norm.cdf(z - s) + cap * stats.norm.sf(z))


def expected_cost(separation: float, policy: Policy, scenario: Scenario) -> float:
    """Exact expected cost per transaction of one arm at the policy's alert rate."""
    pi, r = scenario.fraud_rate, policy.alert_rate
    tau = optimize.brentq(lambda t: (1 - pi) * stats.norm.sf(t) + pi * stats.norm.sf(t - separation) - r,
                          -20.0, 40.0)
    recall = float(stats.norm.sf(tau - separation))
    return policy.cost.review_cost * r + pi * (1 - recall) * mean_missed_cost(policy.cost, scenario)


def recall_at_fpr(separation: float, fpr: float) -> float:
    """Exact recall of one arm whose threshold gives false-positive rate ``fpr``."""
    return float(stats.norm.sf(stats.norm.isf(fpr) - separation))


def separation_for_cost(ratio: float, policy: Policy, scenario: Scenario) -> float:
    """The challenger separation whose expected cost is ``ratio`` times the champion's."""
    target = ratio * expected_cost(scenario.champion_separation, policy, scenario)
    return float(optimize.brentq(lambda mu: expected_cost(mu, policy, scenario) - target, 0.0, 15.0))


# --- traffic -----------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class ArmStream:
    """One arm's labelled rows in arrival order, shape ``(runs, n)``."""

    scores: Floats
    labels: Bools
    amounts: Floats


@dataclass(frozen=True, eq=False)
class Traffic:
    """Both arms' streams. ``challenger_before[:, m]`` = challenger rows among the first ``m`` transactions
    (paired traffic: rows of both arms, i.e. the transactions both arms scored)."""

    champion: ArmStream
    challenger: ArmStream
    paired: bool
    challenger_before: Ints

    def rows_at(self, transactions: int) -> tuple[Ints, Ints]:
        """Rows per arm ``(champion, challenger)`` once ``transactions`` labelled transactions exist."""
        b = self.challenger_before[:, transactions]
        if self.paired:
            return b, b
        return transactions - b, b


def shadow_traffic(scenario: Scenario, n: int, runs: int, rng: np.random.Generator) -> Traffic:
    """``n`` transactions per run, each scored by both arms (paired)."""
    labels = rng.random((runs, n)) < scenario.fraud_rate
    shared = rng.standard_normal((runs, n))
    amounts = rng.lognormal(scenario.amount_log_mean, scenario.amount_log_sigma, (runs, n))
    rho = scenario.correlation

    def arm(separation: float) -> Floats:
        own = rng.standard_normal((runs, n))
        return _sigmoid(separation * labels + math.sqrt(rho) * shared + math.sqrt(1 - rho) * own)

    return shadow_traffic_of(arm(scenario.champion_separation), arm(scenario.challenger_separation), labels, amounts)


def shadow_traffic_of(champion: Floats, challenger: Floats, labels: Bools, amounts: Floats) -> Traffic:
    """Paired traffic from both arms' scores of the same ``(runs, n)`` transactions."""
    runs, n = labels.shape
    before = np.broadcast_to(np.arange(n + 1), (runs, n + 1))
    return Traffic(ArmStream(champion, labels, amounts), ArmStream(challenger, labels, amounts), True, before)


def paired_split_traffic(scenario: Scenario, n: int, runs: int, pairing: float,
                         rng: np.random.Generator) -> Traffic:
    """Split mode with pairing: each request is answered by one arm and, with probability ``pairing``, also
    scored by the other off the response path; `k8s.decide` compares the arms on those pairs.

    Which arm answered does not change a pair (labels do not depend on it, `k8s.decide.split_pairs`), so
    this is shadow traffic thinned to the paired requests, each run's pairs moved to the front.
    """
    return thin(shadow_traffic(scenario, n, runs, rng), rng.random((runs, n)) < pairing)


def thin(traffic: Traffic, keep: Bools) -> Traffic:
    """Paired traffic restricted to the transactions in ``keep`` (per run, order kept, moved to the front)."""
    order = np.argsort(~keep, axis=1, kind="stable")

    def take(stream: ArmStream) -> ArmStream:
        return ArmStream(np.take_along_axis(stream.scores, order, axis=1),
                         np.take_along_axis(stream.labels, order, axis=1),
                         np.take_along_axis(stream.amounts, order, axis=1))

    before = np.zeros((keep.shape[0], keep.shape[1] + 1), dtype=np.int64)
    np.cumsum(keep, axis=1, out=before[:, 1:])
    return Traffic(take(traffic.champion), take(traffic.challenger), True, before)


def split_traffic(scenario: Scenario, n: int, runs: int, challenger_weight: float,
                  rng: np.random.Generator) -> Traffic:
    """``n`` transactions per run, each answered by one arm (challenger with ``challenger_weight``)."""
    to_challenger = rng.random((runs, n)) < challenger_weight
    before = np.zeros((runs, n + 1), dtype=np.int64)
    before[:, 1:] = np.cumsum(to_challenger, axis=1)

    def arm(separation: float, length: int) -> ArmStream:
        labels = rng.random((runs, length)) < scenario.fraud_rate
        latent = separation * labels + rng.standard_normal((runs, length))
        amounts = rng.lognormal(scenario.amount_log_mean, scenario.amount_log_sigma, (runs, length))
        return ArmStream(_sigmoid(latent), labels, amounts)

    longest_b = int(before[:, -1].max())
    longest_a = int((n - before[:, -1]).max())
    return Traffic(arm(scenario.champion_separation, longest_a), arm(scenario.challenger_separation, longest_b),
                   False, before)


# --- experiments -------------------------------------------------------------------------------

class Verdict(StrEnum):
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    NONE = "none"  # held until the end


@dataclass(frozen=True, eq=False)
class Experiments:
    """First verdict of each run and the number of labelled transactions when it came (0 if none)."""

    verdict: NDArray[np.str_]
    at: Ints
    fixed_rule_promoted: Bools  # the peers-style rule on the same data (expected cost only)
    fixed_rule_at: Ints
    z_significant: Bools  # (runs, looks): a fixed-horizon z-test run once, at that look, would reject
    constant_bet_promoted: Bools  # (runs, len(CONSTANT_BETS), looks): that one bet's test has promoted by then
    discordant: Ints  # (runs, 2): gains above 1/2 and below -1/2 up to the horizon (paired: frauds one arm missed)

    def z_power(self) -> Floats:
        """Per look: the share of runs a fixed-horizon one-sided z-test planned for that look rejects."""
        return np.asarray(self.z_significant.mean(axis=0), dtype=np.float64)

    def constant_bet_power(self) -> Floats:
        """Per constant bet (`CONSTANT_BETS`) and look: the share of runs its test has promoted by then."""
        return np.asarray(self.constant_bet_promoted.mean(axis=0), dtype=np.float64)

    def rate(self, verdict: Verdict) -> float:
        return float(np.mean(self.verdict == verdict.value))

    def promoted_at(self) -> Floats:
        """Per run: the labelled transactions at which it was promoted, ``inf`` if it was not."""
        return np.where(self.verdict == Verdict.PROMOTE.value, self.at, np.inf)

    def promoted_by(self, transactions: int) -> float:
        return float(np.mean(self.promoted_at() <= transactions))


def missed_costs(stream: ArmStream, cost: CostMatrix) -> Floats:
    """Per-row missed-fraud cost: the clipped amount when amounts are used, else the constant."""
    if cost.amount_feature is None or cost.amount_cap is None:
        return np.full(stream.scores.shape, cost.missed_fraud_cost)
    return np.minimum(stream.amounts, cost.amount_cap)


def _arm_values(stream: ArmStream, policy: Policy) -> tuple[Floats, Bools, Bools]:
    """Per-row values (higher is better), tested rows and alerts: `criterion_values`, as in `decide`."""
    return criterion_values(stream.scores, stream.labels, missed_costs(stream, policy.cost), policy)


def _compact(values: Floats, tested: Bools) -> tuple[Floats, Ints]:
    """Move each run's tested values to the front (order kept); also the tested count before each row."""
    order = np.argsort(~tested, axis=1, kind="stable")
    packed = np.take_along_axis(values, order, axis=1)
    before = np.zeros((values.shape[0], values.shape[1] + 1), dtype=np.int64)
    before[:, 1:] = np.cumsum(tested, axis=1)
    return packed, before


ArmValues = tuple[Floats, Bools]


def gains(traffic: Traffic, policy: Policy, challenger_weight: float = 0.1,
          values: tuple[ArmValues, ArmValues] | None = None) -> tuple[Floats, Ints, Ints]:
    """The test's gain sequence per run and, per run, how many gains exist after ``m`` transactions.

    Returns ``(gains, pairs_before, tested_before_a)``: ``gains[:, :pairs_before[:, m]]`` is what `decide`
    tests after ``m`` labelled transactions. ``values`` are the arms' `_arm_values` if already computed.
    """
    if values is None:
        values = (_arm_values(traffic.champion, policy)[:2], _arm_values(traffic.challenger, policy)[:2])
    (va, ta), (vb, tb) = values
    scale = gain_scale(policy, traffic.paired)
    if traffic.paired:
        both = ta & tb
        packed, before = _compact((vb - va) / scale, both)
        at = np.take_along_axis(before, traffic.challenger_before, axis=1)  # transactions -> rows
        return packed, at, at
    pa, before_a = _compact(va, ta)
    pb, before_b = _compact(vb, tb)
    ka, kb = split_ratio(challenger_weight)
    a_mean, b_mean = pair_blocks(pa, pb, (ka, kb))
    _runs, m1 = traffic.challenger_before.shape
    n_a = np.arange(m1)[None, :] - traffic.challenger_before
    tested_a = np.take_along_axis(before_a, np.minimum(n_a, before_a.shape[1] - 1), axis=1)
    tested_b = np.take_along_axis(before_b, np.minimum(traffic.challenger_before, before_b.shape[1] - 1), axis=1)
    pairs = np.minimum(tested_a // ka, tested_b // kb)
    pairs = np.minimum(pairs, a_mean.shape[1])
    return (b_mean - a_mean) / scale, pairs, tested_a


def z_statistic(g: Floats) -> Floats:
    """``out[:, p]`` = the z statistic ``mean / (sd / sqrt(p))`` of the first ``p`` gains (0 for p < 2)."""
    runs, n = g.shape
    s1 = np.zeros((runs, n + 1))
    s2 = np.zeros((runs, n + 1))
    np.cumsum(g, axis=1, out=s1[:, 1:])
    np.cumsum(g * g, axis=1, out=s2[:, 1:])
    p = np.arange(n + 1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / p
        var = (s2 - p * mean * mean) / (p - 1)
        z = mean / np.sqrt(var / p)
    return np.where((p >= 2) & (var > 0), z, 0.0)


def _running_max(x: Floats) -> Floats:
    """Running maximum with a leading 0 (empty prefix), so ``out[:, p]`` covers the first ``p`` entries."""
    out = np.zeros((x.shape[0], x.shape[1] + 1))
    out[:, 1:] = np.maximum.accumulate(np.maximum(x, 0.0), axis=1)
    return out


#: The benchmark's floor for betting: the promote test with one constant bet ``lambda`` on every gain, ``W_t =
#: prod (1 + lambda g_i)``. Each is a valid test; the best of them for a cell, picked after seeing the results, is not,
#: but it marks about how far any single bettor could get there (the mixture pays for not knowing the bet).
CONSTANT_BETS: tuple[float, ...] = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 0.9, 0.99)


def run_experiments(traffic: Traffic, policy: Policy, looks: Ints, *, challenger_weight: float = 0.1,
                    fixed_rule_margin: float = 0.05) -> Experiments:
    """Call the decision rule at every look (labelled transactions so far) and keep each run's first verdict.

    Mirrors `k8s.decide.decide` with all guardrails healthy: HOLD until both arms have
    ``minLabelledPerArm`` rows and ``minPositivesPerArm`` frauds; then ROLLBACK if the "worse" test has
    rejected, else PROMOTE if the "better" test has, else HOLD. The fixed rule promotes at the first gated
    look where the challenger's mean cost is ``fixed_rule_margin`` below the champion's. ``z_significant``:
    at each gated look, whether a fixed-horizon one-sided z-test of the same gains at ``alpha`` rejects (the
    oracle that may not peek: valid only when planned for that one look). ``constant_bet_promoted``: whether the
    promote test with each of `CONSTANT_BETS` alone has rejected by each gated look. ``discordant``: the large
    gains each way (the sign model of `k8s.frontier`).
    """
    full = (_arm_values(traffic.champion, policy), _arm_values(traffic.challenger, policy))
    g, pairs_before, _ = gains(traffic, policy, challenger_weight, (full[0][:2], full[1][:2]))
    bar = math.log(1.0 / policy.alpha)
    planned = planned_observations(policy.planned_labels, None if traffic.paired else split_ratio(challenger_weight))
    best = _running_max(log_wealth(g, alpha=policy.alpha, planned=planned))
    worst = _running_max(log_wealth(-g, alpha=policy.alpha, planned=planned))
    constant = [_running_max(np.cumsum(np.log1p(bet * g), axis=1)) for bet in CONSTANT_BETS]
    z = z_statistic(g)
    z_bar = float(stats.norm.isf(policy.alpha))
    z_significant = np.zeros((g.shape[0], len(looks)), dtype=bool)
    runs = g.shape[0]
    constant_promoted = np.zeros((runs, len(CONSTANT_BETS), len(looks)), dtype=bool)
    verdict = np.full(runs, Verdict.NONE.value, dtype=object)
    at = np.zeros(runs, dtype=np.int64)
    fixed = np.zeros(runs, dtype=bool)
    fixed_at = np.zeros(runs, dtype=np.int64)
    pos_a = np.concatenate([np.zeros((runs, 1), np.int64), np.cumsum(traffic.champion.labels, axis=1)], axis=1)
    pos_b = np.concatenate([np.zeros((runs, 1), np.int64), np.cumsum(traffic.challenger.labels, axis=1)], axis=1)
    costs = None
    if policy.criterion is Criterion.EXPECTED_COST:
        # the fixed rule compares plain costs (what a dashboard would show)
        plain = [(transaction_costs(f, stream.labels, missed_costs(stream, policy.cost), policy.cost.review_cost), t)
                 for (_, t, f), stream in zip(full, (traffic.champion, traffic.challenger), strict=True)]
        costs = tuple(np.concatenate([np.zeros((runs, 1)), np.cumsum(np.where(t, c, 0.0), axis=1)], axis=1)
                      for c, t in plain)
        counts = tuple(np.concatenate([np.zeros((runs, 1), np.int64), np.cumsum(t, axis=1)], axis=1)
                       for _, t in plain)
    rows = np.arange(runs)
    tested = np.arange(g.shape[1])[None, :] < pairs_before[rows, looks[-1]][:, None]
    discordant = np.stack([(tested & (g > 0.5)).sum(axis=1), (tested & (g < -0.5)).sum(axis=1)], axis=1)
    for look, m in enumerate(looks):
        n_a, n_b = traffic.rows_at(int(m))
        gate = ((n_a >= policy.min_labelled_per_arm) & (n_b >= policy.min_labelled_per_arm)
                & (pos_a[rows, np.minimum(n_a, pos_a.shape[1] - 1)] >= policy.min_positives_per_arm)
                & (pos_b[rows, np.minimum(n_b, pos_b.shape[1] - 1)] >= policy.min_positives_per_arm))
        p = pairs_before[rows, m]
        z_significant[:, look] = gate & (z[rows, p] >= z_bar)
        for i, wealth in enumerate(constant):
            constant_promoted[:, i, look] = gate & (wealth[rows, p] >= bar)
        open_ = gate & (verdict == Verdict.NONE.value)
        worse = open_ & (worst[rows, p] >= bar)
        better = open_ & ~worse & (best[rows, p] >= bar)
        verdict[worse] = Verdict.ROLLBACK.value
        verdict[better] = Verdict.PROMOTE.value
        at[worse | better] = m
        if costs is not None:
            ca, cb = costs
            na_t, nb_t = counts
            ia, ib = np.minimum(n_a, ca.shape[1] - 1), np.minimum(n_b, cb.shape[1] - 1)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean_a = ca[rows, ia] / na_t[rows, ia]
                mean_b = cb[rows, ib] / nb_t[rows, ib]
            hit = gate & ~fixed & (na_t[rows, ia] > 0) & (nb_t[rows, ib] > 0) & (mean_b <= (1 - fixed_rule_margin) * mean_a)
            fixed_at[hit] = m
            fixed |= hit
    return Experiments(verdict.astype(str), at, fixed, fixed_at, z_significant, constant_promoted, discordant)


@dataclass(frozen=True)
class Setup:
    """A benchmark cell: which traffic, how much, how often the controller looks."""

    scenario: Scenario = field(default_factory=Scenario)
    transactions: int = 50_000
    look_every: int = 500
    paired: bool = True  # shadow mode
    challenger_weight: float = 0.1
    pairing: float = 0.0  # split mode: share of requests the other arm also scores (compared as pairs)

    @property
    def mode(self) -> str:
        return "shadow" if self.paired else "paired split" if self.pairing else "split"

    @property
    def looks(self) -> Ints:
        return np.arange(self.look_every, self.transactions + 1, self.look_every, dtype=np.int64)

    def traffic(self, runs: int, rng: np.random.Generator) -> Traffic:
        if self.paired:
            return shadow_traffic(self.scenario, self.transactions, runs, rng)
        if self.pairing:
            return paired_split_traffic(self.scenario, self.transactions, runs, self.pairing, rng)
        return split_traffic(self.scenario, self.transactions, runs, self.challenger_weight, rng)


def simulate(setup: Setup, policy: Policy, runs: int, seed: int, *, chunk: int = 50,
             fixed_rule_margin: float = 0.05, progress: Callable[[int], object] | None = None,
             traffic: Callable[[int, np.random.Generator], Traffic] | None = None) -> Experiments:
    """``runs`` seeded experiments of ``setup`` under ``policy``, ``chunk`` runs at a time.

    ``progress`` is called with the number of runs finished after each chunk (e.g. ``tqdm.update``).
    ``traffic(runs, rng)`` replaces the setup's synthetic traffic (the real-data replays, `k8s.replay`).
    """
    parts = []
    for start in range(0, runs, chunk):
        rng = np.random.default_rng([seed, start])
        size = min(chunk, runs - start)
        streams = setup.traffic(size, rng) if traffic is None else traffic(size, rng)
        parts.append(run_experiments(streams, policy, setup.looks, challenger_weight=setup.challenger_weight,
                                     fixed_rule_margin=fixed_rule_margin))
        if progress is not None:
            progress(size)
    return Experiments(*(np.concatenate([getattr(p, f.name) for p in parts])
                         for f in dataclasses.fields(Experiments)))

