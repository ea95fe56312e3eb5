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
DRIFT = (
    MetricSpec("kingmaker_drift_feature_psi", Kind.GAUGE,
               "PSI of one feature in the window against the champion reference", ("feature", "model_version")),
    MetricSpec("kingmaker_drift_feature_ks_statistic", Kind.GAUGE,
               "Two-sample KS statistic D of one feature against the champion reference",
               ("feature", "model_version")),
    MetricSpec("kingmaker_drift_feature_ks_pvalue", Kind.GAUGE,
               "KS p-value of one feature, corrected across features (BH or Bonferroni)",
               ("feature", "model_version")),
    MetricSpec("kingmaker_drift_feature_severity", Kind.GAUGE,
               "Drift severity of one feature: -1 insufficient data, 0 none, 1 moderate, 2 severe",
               ("feature", "model_version")),
    MetricSpec("kingmaker_drift_features_drifted", Kind.GAUGE,
               "Number of features with moderate or severe drift", ("model_version",)),
    MetricSpec("kingmaker_drift_severity", Kind.GAUGE,
               "Overall drift severity (features and scores): -1 insufficient data, 0 none, 1 moderate, 2 severe",
               ("model_version",)),
    MetricSpec("kingmaker_drift_score_psi", Kind.GAUGE,
               "PSI of one arm's scores against its model version's reference scores", ("arm", "model_version")),
    MetricSpec("kingmaker_drift_score_ks_pvalue", Kind.GAUGE,
               "KS p-value of one arm's scores against its model version's reference scores",
               ("arm", "model_version")),
    MetricSpec("kingmaker_drift_arms_score_psi", Kind.GAUGE,
               "PSI between champion and challenger scores in the same window",
               ("champion_version", "challenger_version")),
    MetricSpec("kingmaker_drift_window_rows", Kind.GAUGE,
               "Prediction-log rows in the analysed window per arm (served and shadow)", ("arm",)),
    MetricSpec("kingmaker_drift_duration_seconds", Kind.GAUGE,
               "Wall time of the last drift job run"),
    MetricSpec("kingmaker_drift_last_success_timestamp_seconds", Kind.GAUGE,
               "Unix time of the last drift job run that completed"),
)

# --- promotion controller (k8s) ---------------------------------------------------------------
# `outcome` is k8s.decide.Outcome, `reason` k8s.decide.Reason: both closed sets, so cardinality is bounded.
CONTROLLER = (
    MetricSpec("kingmaker_controller_decisions", Kind.COUNTER,
               "Decisions of the promotion controller", ("outcome", "reason")),
    MetricSpec("kingmaker_controller_last_decision_timestamp_seconds", Kind.GAUGE,
               "Unix time of the last decision"),
    MetricSpec("kingmaker_controller_p_value", Kind.GAUGE,
               "Always-valid p-value of the last decision: test=better (challenger not better) or worse",
               ("test",)),
    MetricSpec("kingmaker_controller_matured_labelled", Kind.GAUGE,
               "Matured labelled transactions per arm in the last decision", ("arm", "model_version")),
    MetricSpec("kingmaker_controller_matured_positives", Kind.GAUGE,
               "Matured frauds per arm in the last decision", ("arm", "model_version")),
)

CATALOG = Catalog(specs=TRAINING + DRIFT + CONTROLLER)
