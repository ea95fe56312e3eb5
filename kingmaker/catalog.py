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
SCORE_BUCKETS = (*tuple(round(x * 0.05, 2) for x in range(1, 20)), 0.99)


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
# Every series but the leader gauge names its ChampionChallenger (`championchallenger`, the resource name), so
# dashboards and alerts filter by it. The other labels are closed sets: `outcome` k8s.decide.Outcome, `reason`
# k8s.decide.Reason, `phase` k8s.resource.Phase, `arm`/`role` champion|challenger, `test` better|worse,
# `bound` estimate|lower|upper, `guardrail` error_rate|p99_latency_seconds|score_psi, `result` ok|temporary_error|
# permanent_error|not_leader. Gauges keep only the latest decision's series per resource (an old model version
# or criterion is removed), so cardinality stays bounded.
CONTROLLER = (
    MetricSpec("kingmaker_controller_decisions", Kind.COUNTER,
               "Decisions of the promotion controller", ("championchallenger", "outcome", "reason")),
    MetricSpec("kingmaker_controller_last_decision_timestamp_seconds", Kind.GAUGE,
               "Unix time of the last decision", ("championchallenger",)),
    MetricSpec("kingmaker_controller_p_value", Kind.GAUGE,
               "Always-valid p-value of the last decision, test=better (H0: challenger not better) or worse; "
               "1/p is the betting test's largest wealth so far, which decides when it reaches 1/alpha",
               ("championchallenger", "test")),
    MetricSpec("kingmaker_controller_alpha", Kind.GAUGE,
               "Level of the sequential test: a verdict needs p <= alpha, i.e. wealth >= 1/alpha",
               ("championchallenger",)),
    MetricSpec("kingmaker_controller_criterion_difference", Kind.GAUGE,
               "Challenger minus champion on the criterion (cost per 1k transactions, recall or PR-AUC) and its "
               "always-valid confidence sequence (bound=estimate|lower|upper)",
               ("championchallenger", "criterion", "bound")),
    MetricSpec("kingmaker_controller_matured_labelled", Kind.GAUGE,
               "Matured labelled transactions per arm in the last decision",
               ("championchallenger", "arm", "model_version")),
    MetricSpec("kingmaker_controller_matured_positives", Kind.GAUGE,
               "Matured frauds per arm in the last decision", ("championchallenger", "arm", "model_version")),
    MetricSpec("kingmaker_controller_min_matured_labelled", Kind.GAUGE,
               "Gate: matured labelled transactions each arm needs before any verdict", ("championchallenger",)),
    MetricSpec("kingmaker_controller_min_matured_positives", Kind.GAUGE,
               "Gate: matured frauds each arm needs before any verdict", ("championchallenger",)),
    MetricSpec("kingmaker_controller_guardrail_limit", Kind.GAUGE,
               "The resource's guardrail: a challenger reading above it rolls the challenger back",
               ("championchallenger", "guardrail")),
    MetricSpec("kingmaker_controller_guardrail_reading", Kind.GAUGE,
               "The challenger's guardrail reading in the last decision (absent: could not be read)",
               ("championchallenger", "guardrail")),
    MetricSpec("kingmaker_controller_phase", Kind.GAUGE,
               "1 for the resource's current status.phase, 0 for the others", ("championchallenger", "phase")),
    MetricSpec("kingmaker_controller_model_version_info", Kind.GAUGE,
               "1 for the model version in each role (champion, challenger) according to the status",
               ("championchallenger", "role", "model_version")),
    MetricSpec("kingmaker_controller_reconciles", Kind.COUNTER,
               "Reconciles by result=ok|temporary_error|permanent_error|not_leader", ("championchallenger", "result")),
    MetricSpec("kingmaker_controller_last_reconcile_timestamp_seconds", Kind.GAUGE,
               "Unix time of the last reconcile that completed", ("championchallenger",)),
    MetricSpec("kingmaker_controller_evaluation_interval_seconds", Kind.GAUGE,
               "The resource's evaluationIntervalSeconds", ("championchallenger",)),
    MetricSpec("kingmaker_controller_leader", Kind.GAUGE,
               "1 while this controller process may act (holds the Lease, or the local lock), else 0; per "
               "process, not per resource: one Lease covers every resource of the namespace"),
    MetricSpec("kingmaker_controller_policy_reloads", Kind.COUNTER,
               "Local mode: re-reads of the changed policy file: outcome=ok|invalid (an invalid edit keeps the "
               "last good policy)", ("championchallenger", "outcome")),
)

# --- serving (bentos): Scorer (one process per arm) and Router ---------------------------------
# `arm` is kingmaker.roles.Arm, `endpoint` a Scorer API name, `code` the HTTP status, `outcome`/`reason`
# small closed sets documented per metric, so cardinality stays bounded.
SERVING = (
    MetricSpec("kingmaker_scorer_requests", Kind.COUNTER,
               "Scorer requests by endpoint and HTTP status", ("arm", "model_version", "endpoint", "code")),
    MetricSpec("kingmaker_scorer_request_duration_seconds", Kind.HISTOGRAM,
               "Scorer time per request, validation to response", ("arm", "model_version", "endpoint"),
               LATENCY_BUCKETS),
    MetricSpec("kingmaker_predictions", Kind.COUNTER,
               "Rows scored", ("arm", "model_version")),
    MetricSpec("kingmaker_score", Kind.HISTOGRAM,
               "Fraud scores produced", ("arm", "model_version"), SCORE_BUCKETS),
    MetricSpec("kingmaker_decisions", Kind.COUNTER,
               "Decisions at the registered threshold: decision=fraud|legit", ("arm", "model_version", "decision")),
    MetricSpec("kingmaker_scorer_errors", Kind.COUNTER,
               "Scorer requests refused or failed: reason=invalid_input|too_large|internal",
               ("arm", "model_version", "endpoint", "reason")),
    MetricSpec("kingmaker_scorer_model_info", Kind.GAUGE,
               "1 for the model version this Scorer serves", ("arm", "model_name", "model_version")),
    MetricSpec("kingmaker_scorer_model_from_cache", Kind.GAUGE,
               "1 while this Scorer serves its locally cached model version because the registry was unreachable "
               "at start-up (it keeps retrying), else 0", ("arm", "model_name", "model_version")),
    MetricSpec("kingmaker_router_requests", Kind.COUNTER,
               "Routed requests by the arm that answered the client", ("arm", "model_version", "mode", "code")),
    MetricSpec("kingmaker_router_request_duration_seconds", Kind.HISTOGRAM,
               "End-to-end Router latency as the client sees it", ("arm", "model_version", "mode"),
               LATENCY_BUCKETS),
    MetricSpec("kingmaker_router_routed", Kind.COUNTER,
               "Rows assigned to each arm by the routing function (before any fallback)", ("arm", "mode")),
    MetricSpec("kingmaker_router_upstream_requests", Kind.COUNTER,
               "Router calls to an arm: outcome=ok|timeout|connect_error|http_error|auth_error|bad_response|"
               "circuit_open|rejected|shadow_skipped", ("arm", "model_version", "outcome")),
    MetricSpec("kingmaker_router_upstream_duration_seconds", Kind.HISTOGRAM,
               "Router-to-arm call latency", ("arm", "model_version"), LATENCY_BUCKETS),
    MetricSpec("kingmaker_router_fallbacks", Kind.COUNTER,
               "Challenger-routed rows answered by the champion instead (split mode), by reason", ("reason",)),
    MetricSpec("kingmaker_router_champion_fallbacks", Kind.COUNTER,
               "Champion-routed rows answered by the challenger because the champion failed (split mode, "
               "champion_fallback: challenger), by reason", ("reason",)),
    MetricSpec("kingmaker_router_champion_fallback_enabled", Kind.GAUGE,
               "1 when router.yaml lets the challenger answer for a failed champion (champion_fallback: challenger)"),
    MetricSpec("kingmaker_router_unavailable", Kind.COUNTER,
               "503 answers, by reason: the champion's failure (timeout, connect_error ...), not_ready, or "
               "log_unavailable (the answer could not be written to the prediction log, so none was given)",
               ("reason",)),
    MetricSpec("kingmaker_router_pairs", Kind.COUNTER,
               "Split-mode pairing: answered rows also scored by the other arm (arm) off the response path, by "
               "outcome=paired|failed|skipped (shadow_max_in_flight reached)|circuit_open|log_failed|fallback (answered "
               "by a fallback: the other arm had just failed the row)",
               ("arm", "outcome")),
    MetricSpec("kingmaker_router_challenger_weight", Kind.GAUGE,
               "Challenger share currently configured (0..1)"),
    MetricSpec("kingmaker_router_config_reloads", Kind.COUNTER,
               "Router config file reloads: outcome=ok|invalid", ("outcome",)),
    MetricSpec("kingmaker_prediction_log_rows", Kind.COUNTER,
               "Prediction-log rows by outcome=written|failed|dropped (failed rows are retried; dropped: lines of a "
               "segment cut short by a machine crash)", ("outcome",)),
    MetricSpec("kingmaker_prediction_log_flush_duration_seconds", Kind.HISTOGRAM,
               "Time to write one prediction-log file", (), LATENCY_BUCKETS),
    MetricSpec("kingmaker_prediction_log_lag_seconds", Kind.GAUGE,
               "Age of the oldest prediction-log row not yet written (0 when every row is written)"),
    MetricSpec("kingmaker_feedback_labels", Kind.COUNTER,
               "Labels received on /feedback: outcome=written|duplicate|updated|superseded", ("outcome",)),
    MetricSpec("kingmaker_feedback_unknown_ids", Kind.COUNTER,
               "Labels whose request id is not in the prediction log (accepted and reported)"),
    MetricSpec("kingmaker_auth_failures", Kind.COUNTER,
               "Requests refused by bearer-token auth: reason=missing|invalid|not_configured", ("path", "reason")),
)

# --- runtime: prometheus_client's process collector ----------------------------------------------
# Each serving process exposes these for itself (`bentos.metrics`). They keep prometheus_client's standard
# names (no kingmaker_ prefix) and are never created from here; they are listed so that rules and dashboards
# name catalogued metrics only.
RUNTIME = (
    MetricSpec("process_cpu_seconds", Kind.COUNTER, "Total user and system CPU time spent in seconds"),
    MetricSpec("process_resident_memory_bytes", Kind.GAUGE, "Resident memory size in bytes"),
    MetricSpec("process_open_fds", Kind.GAUGE, "Number of open file descriptors"),
    MetricSpec("process_start_time_seconds", Kind.GAUGE, "Start time of the process since unix epoch in seconds"),
)

CATALOG = Catalog(specs=TRAINING + DRIFT + CONTROLLER + SERVING + RUNTIME)


def create(spec: MetricSpec, registry: CollectorRegistry) -> Counter | Gauge | Histogram:
    """Instantiate one catalog metric in ``registry``."""
    if spec.kind is Kind.COUNTER:
        return Counter(spec.name, spec.help, spec.labels, registry=registry)
    if spec.kind is Kind.GAUGE:
        return Gauge(spec.name, spec.help, spec.labels, registry=registry)
    return Histogram(spec.name, spec.help, spec.labels, registry=registry,
                     buckets=spec.buckets or Histogram.DEFAULT_BUCKETS)
