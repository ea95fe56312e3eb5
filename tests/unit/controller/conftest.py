"""Builders for controller tests: literal, deterministic rows and observations (no fakes, no cluster)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import yaml

from k8s.decide import ArmRows, DriftSummary, GuardrailReadings, Observations
from k8s.policy import Policy, parse_policy
from kingmaker.logs import Mode

ROOT = Path(__file__).resolve().parents[3]
CRD = ROOT / "k8s" / "crd" / "championchallenger.yaml"
EXAMPLE = ROOT / "k8s" / "examples" / "championchallenger.yaml"

#: Every 50th transaction (index 49, 99, ...) is a fraud: a 2 % fraud rate.
FRAUD_EVERY = 50
HEALTHY = GuardrailReadings(error_rate=0.001, p99_latency_seconds=0.05)
NO_DRIFT = DriftSummary(score_psi=0.02)


def is_fraud(n: int) -> np.ndarray:
    return (np.arange(n) % FRAUD_EVERY) == FRAUD_EVERY - 1


def legit_scores(n: int) -> np.ndarray:
    """Distinct scores in [0, 0.5): each block of 500 rows holds a permutation of the same values."""
    return ((np.arange(n) * 37) % 500) / 1000.0


def scores(n: int, *, fraud_score: float) -> np.ndarray:
    """Legitimate rows get `legit_scores`; frauds get ``fraud_score`` (0.99: always caught; 0.0005: never)."""
    return np.where(is_fraud(n), fraud_score, legit_scores(n))


def arm(version: str, score: Sequence[float] | np.ndarray, *, ts: np.ndarray | None = None,
        label: np.ndarray | None = None, label_ts: np.ndarray | None = None) -> ArmRows:
    n = len(score)
    t = np.arange(n, dtype=float) if ts is None else ts
    lab = is_fraud(n).astype(float) if label is None else label
    return ArmRows.of(version, ts=t, score=score, label=lab, label_ts=label_ts,
                      request_id=[f"r{i}" for i in range(n)])


def observations(champion: ArmRows, challenger: ArmRows, *, mode: Mode = Mode.SHADOW, weight: float = 0.1,
                 now: float | None = None, guardrails: GuardrailReadings = HEALTHY,
                 drift: DriftSummary | None = NO_DRIFT) -> Observations:
    last = max(float(champion.ts.max(initial=0.0)), float(challenger.ts.max(initial=0.0)))
    return Observations(now=last if now is None else now, mode=mode, challenger_weight=weight,
                        champion=champion, challenger=challenger, guardrails=guardrails, drift=drift)


def policy(**spec: object) -> Policy:
    """A policy from CRD-style keys; label delay 0 unless given, so every row has matured."""
    return parse_policy({"labelDelaySeconds": 0, **spec})


@pytest.fixture(scope="session")
def crd() -> dict:
    return yaml.safe_load(CRD.read_text())


@pytest.fixture(scope="session")
def example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())
