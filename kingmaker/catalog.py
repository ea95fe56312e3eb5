"""The metric catalog: every Prometheus metric kingmaker exposes, defined once.

Services, recording/alerting rules, dashboards and the controller all use these names. Conventions:
prefix ``kingmaker_``, units in names (``_seconds``, ``_total``), labels ``arm`` and
``model_version`` where a metric belongs to one arm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Kind(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True)
class MetricSpec:
    name: str  # counters without the _total suffix (prometheus_client appends it)
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None

    @property
    def exposed_name(self) -> str:
        """The name as scraped (counters gain ``_total``)."""
        return f"{self.name}_total" if self.kind is Kind.COUNTER else self.name


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
SCORE_BUCKETS = tuple(round(x * 0.05, 2) for x in range(1, 20)) + (0.99,)


@dataclass(frozen=True)
class Catalog:
    specs: tuple[MetricSpec, ...] = field(default_factory=tuple)

    def __getitem__(self, name: str) -> MetricSpec:
        for spec in self.specs:
            if spec.name == name:
                return spec
        raise KeyError(name)


# --- training ---------------------------------------------------------------------------------
TRAINING = (
    MetricSpec("kingmaker_training_last_success_timestamp_seconds", Kind.GAUGE,
               "Unix time of the last successful training run", ("model_name",)),
)

# --- drift job (drift_service) ----------------------------------------------------------------
# Pushed to a Pushgateway by the drift CronJob. Severity gauges are ordinal: -1 insufficient data,
# 0 none, 1 moderate, 2 severe (`drift_service.stats.Severity.level`).
CATALOG = Catalog(specs=TRAINING)


def create(spec: MetricSpec, registry: CollectorRegistry) -> Counter | Gauge | Histogram:
    """Instantiate one catalog metric in ``registry``."""
    if spec.kind is Kind.COUNTER:
        return Counter(spec.name, spec.help, spec.labels, registry=registry)
    if spec.kind is Kind.GAUGE:
        return Gauge(spec.name, spec.help, spec.labels, registry=registry)
    return Histogram(spec.name, spec.help, spec.labels, registry=registry,
                     buckets=spec.buckets or Histogram.DEFAULT_BUCKETS)
