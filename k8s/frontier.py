"""How close any valid test could come to the one-look z-test on sparse gains: the sign model's frontier.

On the real data nearly all of the evidence is a fraud one arm caught and the other missed (a gain of about
+-0.97, ~0.1 per 1,000 labelled transactions); every other gain is small. The *sign model* keeps only those
discordant frauds: by ``n`` labels ``D ~ Poisson(rate * n)`` of them have arrived, each a win for the challenger
with probability ``q`` (``rate`` and ``q`` are measured in the replays). In it:

* the one-look z-test at ``n`` rejects iff ``(W - L) / sqrt(W + L) >= z_alpha``: three wins and no loss are
  enough at alpha 0.05 (`z_power`);
* a test that decides on the sequence of signs alone (as a constant bet does) and is valid at level
  ``alpha`` rejects on a prefix-free set of sign sequences whose probabilities under a fair coin (H0's worst
  case) sum to at most ``alpha`` -- four straight wins already cost 1/16 > 0.05, so five are needed where
  nothing else is seen. Its power by ``n`` is ``sum_s P_q(s) P(D >= |s|)``; `constant_bet_power` computes it
  exactly for a constant bet, and `power_bound` bounds it for every such test, randomised or not, even one
  told ``q`` and ``n`` (an oracle: a real test knows neither); `best_sign_test` finds the best test that does not
  randomise.

`labels_for_power` turns them into labels for 80 % power next to the z-test's; `kingmaker bench promotion`
reports them for the real-data cells, so the measured ratio can be read against what is possible at all.
Pure scipy/numpy, no I/O.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, sparse, stats

Floats = NDArray[np.float64]

#: Longest sign sequence considered; ``P(D > DEPTH)`` is added to the bound (power 1 there), so truncation
#: can only loosen it. At the <= 40 expected discordant frauds searched here that term is below 1e-6.
DEPTH = 100
#: Longest sign sequence `best_sign_test` may reject; ``P(D > 22) < 1e-4`` at the ~9 expected discordant frauds
#: of the real cells' 80 % points.
SEARCH_DEPTH = 22
#: Largest expected number of discordant frauds searched for the 80 % power point.
MAX_DISCORDANT = 40.0


def z_power(mu: float, q: float, alpha: float = 0.05) -> float:
    """Power of the one-look z-test when ``mu`` discordant frauds are expected, each a win with probability ``q``."""
    bar = stats.norm.isf(alpha)
    d = np.arange(1, DEPTH + 1)[:, None]
    w = np.arange(DEPTH + 1)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        rejects = (w <= d) & ((2 * w - d) / np.sqrt(d) >= bar)
    return float((stats.poisson.pmf(d[:, 0], mu) * (stats.binom.pmf(w, d, q) * rejects).sum(axis=1)).sum())


def _tail(mu: float) -> Floats:
    """``T(d) = P(D >= d)`` for d = 0..DEPTH."""
    return np.asarray(stats.poisson.sf(np.arange(DEPTH + 1) - 1, mu), dtype=np.float64)


def _sequence_probability(q: float, d: int) -> Floats:
    """``P_q`` of one sign sequence of length ``d`` with ``w`` wins, for w = 0..d."""
    w = np.arange(d + 1)
    return np.asarray(q ** w * (1 - q) ** (d - w), dtype=np.float64)


def constant_bet_power(mu: float, q: float, bet: float, alpha: float = 0.05) -> float:
    """Power by ``n`` of the test with one constant bet on every sign: it rejects at the first
    ``(1 + bet)^W (1 - bet)^L >= 1 / alpha`` (``W`` wins and ``L`` losses among the discordant frauds so far)."""
    tail, bar = _tail(mu), math.log(1.0 / alpha) - 1e-12
    power = 0.0
    paths = np.ones(1)  # sign sequences reaching each node of depth d (index: wins) without an earlier rejection
    for d in range(DEPTH + 1):
        w = np.arange(d + 1)
        here = np.where(w * math.log1p(bet) + (d - w) * math.log1p(-bet) >= bar, paths, 0.0)
        power += (here * _sequence_probability(q, d)).sum() * tail[d]
        left = paths - here
        paths = np.concatenate([left, [0.0]]) + np.concatenate([[0.0], left])  # a loss keeps w, a win adds one
    return float(power)


def power_bound(mu: float, q: float, alpha: float = 0.05) -> float:
    """No sign-sequence test valid at ``alpha``, randomised or not, has more power by ``n``.

    Weak duality: for any price ``m >= 0`` of the level, a test of size ``<= alpha`` has power
    ``<= V(m) + m alpha``, where ``V(m)`` is the best ``sum_s (P_q(s) T(|s|) - m 2^-|s|)`` over prefix-free sets
    ``s`` (``T(d) = P(D >= d)``), an exact dynamic programme over (wins, losses): a node's value is the larger of
    rejecting there and the sum of its two children's. The minimising price gives the tightest bound;
    ``P(D > DEPTH)`` covers the truncation.
    """
    tail = _tail(mu)

    def dual(log_price: float) -> float:
        price = math.exp(log_price)
        value = np.zeros(DEPTH + 2)
        for d in range(DEPTH, -1, -1):  # value[w] of the node with w wins and d - w losses
            reject = _sequence_probability(q, d) * tail[d] - price * 0.5 ** d
            go_on = value[1:d + 2] + value[:d + 1] if d < DEPTH else np.zeros(d + 1)
            value = np.maximum(np.maximum(reject, go_on), 0.0)
        return float(value[0]) + price * alpha

    best = optimize.minimize_scalar(dual, bounds=(-10.0, 15.0), method="bounded", options={"xatol": 1e-4})
    return min(1.0, float(best.fun) + float(stats.poisson.sf(DEPTH, mu)))


def best_sign_test(mu: float, q: float, alpha: float = 0.05,
                   depth: int = SEARCH_DEPTH) -> tuple[float, dict[tuple[int, int], int]]:
    """The most powerful *non-randomised* sign-sequence test valid at ``alpha``: its power by ``n`` and how many
    sign sequences it rejects at each ``(wins, losses)``, by integer programming.

    Such a test rejects a prefix-free set of sequences. All sequences with ``w`` wins and ``l`` losses are alike
    under H0 and under ``q``, so the programme only chooses how many of those still open (not rejected on the
    way) it rejects: maximise ``sum r(w, l) q^w (1 - q)^l P(D >= w + l)`` subject to
    ``sum r(w, l) 2^-(w + l) <= alpha``, where a node's open sequences are its two parents' open and unrejected
    ones. Sequences longer than ``depth`` are never rejected, so truncation only lowers the power. Where it nearly
    reaches `power_bound`, the gap to the z-test is not randomisation's.
    """
    tail = _tail(mu)
    nodes = [(w, d - w) for d in range(depth + 1) for w in range(d + 1)]
    index = {node: i for i, node in enumerate(nodes)}
    size = len(nodes)  # variables: rejected [0, size), open [size, 2 size)
    entries: list[tuple[int, int, float]] = []  # (constraint, variable, coefficient)
    low: list[float] = []
    high: list[float] = []

    def constraint(terms: list[tuple[int, float]], lo: float, hi: float) -> None:
        entries.extend((len(low), j, value) for j, value in terms)
        low.append(lo)
        high.append(hi)

    constraint([(size, 1.0)], 1.0, 1.0)  # one empty sequence, open
    for (w, lost), i in index.items():
        constraint([(i, 1.0), (size + i, -1.0)], -np.inf, 0.0)  # reject no more than are open
        parents = [index[p] for p in ((w - 1, lost), (w, lost - 1)) if p in index]  # a win or a loss leads here
        if parents:  # open here = open and not rejected at the parents
            constraint([(size + i, 1.0), *((size + j, -1.0) for j in parents), *((j, 1.0) for j in parents)],
                       0.0, 0.0)
    # the level in units of 2^-depth: integer coefficients, so tiny probabilities are not rounded away
    constraint([(index[n], 2.0 ** (depth - sum(n))) for n in nodes], -np.inf, math.floor(alpha * 2.0 ** depth))
    r, c, v = zip(*entries, strict=True)
    matrix = sparse.csr_matrix((v, (r, c)), shape=(len(low), 2 * size))
    gain = np.zeros(2 * size)
    gain[:size] = [q ** w * (1 - q) ** lost * tail[w + lost] for w, lost in nodes]
    result = optimize.milp(-gain, integrality=np.ones(2 * size), bounds=optimize.Bounds(0, np.inf),
                           constraints=optimize.LinearConstraint(matrix, low, high))
    if not result.success:
        raise RuntimeError(f"integer programme failed: {result.message}")
    rejected = {node: round(result.x[i]) for node, i in index.items() if result.x[i] > 0.5}
    return float(gain[:size] @ np.round(result.x[:size])), rejected


@dataclass(frozen=True)
class Labels:
    """Labels for ``level`` power in the sign model (None: not within `MAX_DISCORDANT` discordant frauds)."""

    z_test: float | None
    constant_bet: float | None  # the best of the given constant bets, picked knowing q
    bet: float | None  # ... that bet
    any_test: float | None  # no valid sign-sequence test, even randomised, needs fewer


def labels_for_power(rate: float, q: float, bets: tuple[float, ...], alpha: float = 0.05,
                     level: float = 0.8) -> Labels:
    """Labels for ``level`` power when discordant frauds arrive at ``rate`` per label, each won with probability
    ``q``: the z-test's, the best of ``bets``' and the bound's (`power_bound`)."""

    def solve(power: Callable[[float], float]) -> float | None:
        if power(MAX_DISCORDANT) < level:
            return None
        return float(optimize.brentq(lambda mu: power(mu) - level, 1e-3, MAX_DISCORDANT, xtol=1e-3)) / rate

    per_bet = {bet: n for bet in bets if (n := solve(functools.partial(constant_bet_power, q=q, bet=bet, alpha=alpha)))}
    bet = min(per_bet, key=per_bet.__getitem__) if per_bet else None
    return Labels(solve(lambda mu: z_power(mu, q, alpha)), None if bet is None else per_bet[bet], bet,
                  solve(lambda mu: power_bound(mu, q, alpha)))
