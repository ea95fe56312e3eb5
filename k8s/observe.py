"""Observe: everything `k8s.decide.decide` looks at, read from the world into plain values.

The controller reads three sources, each behind a one-method protocol (Flagger's ``RunQuery`` style) so
tests hand in values and production reads the real thing. The adapters live in `k8s.sources`, one module
per source:

- `LabelledWindows` — both arms' logged predictions joined with their labels (`k8s.sources.logs.LogWindows`);
- `GuardrailSource` — the challenger's error rate and p99 latency (`k8s.sources.prometheus.PrometheusGuardrails`;
  an unreachable Prometheus gives readings of None, never an exception: `decide` then holds);
- `DriftSource` — the latest arm-vs-arm score PSI (`k8s.sources.drift.FileDrift` reads the drift job's
  ``drift.json``; `k8s.sources.drift.PrometheusDrift` the gauges the job pushes).

`observe` puts them together into `Observations`. (Which versions are under test comes from the registry,
read through `k8s.act.Registry` before observing.) This module imports no client library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from k8s.decide import ArmRows, DriftSummary, GuardrailReadings, Observations
from k8s.state import Pair, Spec
from kingmaker.errors import PermanentError
from kingmaker.roles import Mode


class LabelledWindows(Protocol):
    def rows(self, pair: Pair, mode: Mode, amount_feature: str | None) -> tuple[ArmRows, ArmRows]:
        """(champion, challenger) rows of the pair's experiment, labels joined (NaN = no label yet)."""
        ...


class GuardrailSource(Protocol):
    def readings(self, pair: Pair) -> GuardrailReadings:
        """The challenger's serving health now; a reading that cannot be had is None."""
        ...


class DriftSource(Protocol):
    def latest(self, pair: Pair, now: float) -> DriftSummary | None:
        """The newest drift result for this pair (score PSI None when missing, stale or for another pair)."""
        ...


@dataclass(frozen=True)
class Sources:
    windows: LabelledWindows
    guardrails: GuardrailSource
    drift: DriftSource


def observe(sources: Sources, spec: Spec, pair: Pair, now: float) -> Observations:
    """Read the three sources for ``pair`` into the values `decide` takes."""
    if pair.challenger is None:
        raise PermanentError("observe: there is no challenger to compare")
    mode = spec.traffic.mode
    champion, challenger = sources.windows.rows(pair, mode, spec.policy.cost.amount_feature)
    return Observations(now=now, mode=mode, challenger_weight=spec.traffic.challenger_weight,
                        champion=champion, challenger=challenger, guardrails=sources.guardrails.readings(pair),
                        drift=sources.drift.latest(pair, now))
