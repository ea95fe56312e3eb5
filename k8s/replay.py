"""Real-data replays for `kingmaker bench promotion`: the credit-card set, bootstrapped.

Models are trained on the earliest 60 % of the credit-card transactions (time order) with the project's
own XGBoost candidate (`training.candidates`), twice with different seeds, and score the latest 40 %
once. A replay draws ``n`` transactions with replacement from that latest part (i.i.d., so any prefix is
itself a replay) and hands them to `k8s.simulate.run_experiments` as `Traffic`, like the synthetic bench:

* ``Arm("xgboost", noise)``: the model's logit plus fresh N(0, noise^2) noise per replayed row -- a
  champion made worse by a measured step (`population_cost` measures its cost on the whole latest part);
* ``Arm("swap")``: per row a fair coin gives one arm the first model and the other arm the second: two
  arms with exactly the same distribution and different scores (an exact A/A in shadow mode).

The scores are cached under ``$KINGMAKER_CACHE/bench/`` (training takes a minute or two). This module is
the benchmark's only link to `training` (an allowed exception in the import contracts, pyproject.toml):
the controller never imports it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from k8s.policy import Policy
from k8s.simulate import ArmStream, Traffic, shadow_traffic_of, thin

Floats = NDArray[np.float64]
TRAIN_SHARE = 0.6
MODELS = ("xgboost", "xgboost2")


@dataclass(frozen=True, eq=False)
class RealScores:
    """The latest part of the data, in time order: labels, amounts, and each model's logit."""

    labels: NDArray[np.bool_]
    amounts: Floats
    logits: dict[str, Floats]

    @property
    def fraud_rate(self) -> float:
        return float(self.labels.mean())


def cache_path() -> Path:
    root = Path(os.environ.get("KINGMAKER_CACHE", Path.home() / ".cache" / "kingmaker"))
    return root / "bench" / "creditcard-replay-scores.npz"


def _logit(p: Floats) -> Floats:
    q = np.clip(p, 1e-12, 1 - 1e-12)
    return np.asarray(np.log(q / (1 - q)), dtype=np.float64)


def load(path: Path | None = None, log: bool = True) -> RealScores:
    """Train (once; then read the cache) and score the two models; see the module docstring."""
    path = path or cache_path()
    if not path.exists():
        from training.candidates import CANDIDATES
        from training.data import load_creditcard, time_cut

        data = load_creditcard()
        assert data.amount_column is not None
        train, test = time_cut(data, 1 - TRAIN_SHARE, "the replay needs the credit card's Time")
        cut = len(train)
        x, y = data.x, data.y
        imbalance = float((y[train] == 0).sum() / (y[train] == 1).sum())
        arrays = {"labels": y[test] == 1, "amounts": data.frame[data.amount_column].to_numpy(np.float64)[test]}
        for seed, name in enumerate(MODELS):
            started = time.perf_counter()
            model = CANDIDATES["xgboost"].build(imbalance, seed=seed, n_jobs=2)
            model.fit(x.iloc[train], y[train])
            arrays[name] = _logit(model.predict_proba(x.iloc[test])[:, 1])
            if log:
                print(f"replay: trained {name} on the earliest {TRAIN_SHARE:.0%} ({cut} rows) in "
                      f"{time.perf_counter() - started:.0f}s", flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays)
    z = np.load(path)
    return RealScores(z["labels"].astype(bool), z["amounts"], {m: z[m] for m in MODELS})


@dataclass(frozen=True)
class Arm:
    model: str  # "xgboost", "xgboost2" or "swap"
    noise: float = 0.0  # SD of the N(0, noise^2) added to the logit per replayed row


def _sigmoid(x: Floats) -> Floats:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float64)


def arm_scores(data: RealScores, arm: Arm, rows: NDArray[np.int64], rng: np.random.Generator,
               coin: NDArray[np.bool_], first: bool) -> Floats:
    """An arm's scores for replayed ``rows``; ``coin``/``first`` pick the model per row for ``swap`` arms."""
    if arm.model == "swap":
        base = np.where(coin if first else ~coin, data.logits[MODELS[0]][rows], data.logits[MODELS[1]][rows])
    else:
        base = data.logits[arm.model][rows]
    if arm.noise:
        base = base + arm.noise * rng.standard_normal(rows.shape)
    return _sigmoid(base)


def population_cost(data: RealScores, arm: Arm, policy: Policy, draws: int = 10, seed: int = 0) -> float:
    """An arm's expected cost per 1,000 transactions on the whole latest part at the policy's alert rate
    (exact top-k alerts; the mean over ``draws`` noise draws)."""
    rng = np.random.default_rng(seed)
    rows = np.arange(data.labels.size)
    k = round(policy.alert_rate * rows.size)
    costs = []
    for _ in range(draws if arm.noise or arm.model == "swap" else 1):
        scores = arm_scores(data, arm, rows, rng, rng.random(rows.size) < 0.5, True)
        alert = np.zeros(rows.size, dtype=bool)
        alert[np.argsort(-scores, kind="stable")[:k]] = True
        missed = (data.labels & ~alert).sum() * policy.cost.missed_fraud_cost
        costs.append(1000.0 * (policy.cost.review_cost * k + missed) / rows.size)
    return float(np.mean(costs))


def shadow_replay(data: RealScores, a: Arm, b: Arm, n: int, runs: int, rng: np.random.Generator) -> Traffic:
    """``n`` replayed transactions per run, each scored by both arms."""
    rows = rng.integers(0, data.labels.size, (runs, n))
    coin = rng.random((runs, n)) < 0.5
    return shadow_traffic_of(arm_scores(data, a, rows, rng, coin, True), arm_scores(data, b, rows, rng, coin, False),
                             data.labels[rows], data.amounts[rows])


def paired_split_replay(data: RealScores, a: Arm, b: Arm, n: int, runs: int, pairing: float,
                        rng: np.random.Generator) -> Traffic:
    """Split mode with pairing (see `k8s.simulate.paired_split_traffic`): shadow replays thinned to the pairs."""
    return thin(shadow_replay(data, a, b, n, runs, rng), rng.random((runs, n)) < pairing)


def split_replay(data: RealScores, a: Arm, b: Arm, n: int, runs: int, weight: float,
                 rng: np.random.Generator) -> Traffic:
    """``n`` replayed transactions per run, each answered by one arm (the challenger with ``weight``)."""
    rows = rng.integers(0, data.labels.size, (runs, n))
    to_b = rng.random((runs, n)) < weight
    before = np.zeros((runs, n + 1), dtype=np.int64)
    np.cumsum(to_b, axis=1, out=before[:, 1:])

    def stream(arm: Arm, mine: NDArray[np.bool_], first: bool) -> ArmStream:
        length = int(mine.sum(axis=1).max())
        own = np.take_along_axis(rows, np.argsort(~mine, axis=1, kind="stable")[:, :length], axis=1)
        coin = rng.random(own.shape) < 0.5
        return ArmStream(arm_scores(data, arm, own, rng, coin, first), data.labels[own], data.amounts[own])

    return Traffic(stream(a, ~to_b, True), stream(b, to_b, False), False, before)
