"""Prometheus recording and alerting rules, as data. ``python -m monitoring.generate`` writes them out.

Every series is kept per ``namespace`` and ``championchallenger`` (the label contract: see
``monitoring/boards.py``), so recording rules are named ``namespace_championchallenger[_more]:metric:operation``
and dashboards and alerts select one resource. Metric names come from the catalog (`metric` refuses
an unknown one), and the alert thresholds that belong to a resource — its guardrails — come from the
controller's own gauges, so a rule never repeats a number the ``ChampionChallenger`` already holds.

Windows: rates over 5 minutes; controller counters as increases over an hour (a decision every few
minutes); "has the controller/drift job run lately" over a day, so that a process that died (its series
gone stale) still alerts.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from k8s.decide import Outcome
from k8s.resource import Phase
from kingmaker.catalog import CATALOG

#: Where ``monitoring/runbooks/<Alert>.md`` is published: the one setting for every alert's ``runbook_url``.
RUNBOOK_BASE = "https://github.com/kingmaker-ml/kingmaker/blob/main/monitoring/runbooks"
#: How old the drift job's last successful run may be (an hourly CronJob, a few runs missed).
DRIFT_MAX_AGE_SECONDS = 3 * 3600
#: Seconds a prediction-log row may wait in the Router's buffer (flushes are every ~2 s).
LOG_MAX_LAG_SECONDS = 60
#: Share of the client's requests answered 503 (champion unavailable) that pages someone.
MAX_UNAVAILABLE_SHARE = 0.01
#: Largest distance between the challenger's routed share and its configured weight (split mode).
MAX_SHARE_OFF = 0.05

BY = "namespace, championchallenger"
LEVEL = "namespace_championchallenger"
RATE = "5m"


def metric(name: str, suffix: str = "") -> str:
    """The scraped name of catalog metric ``name`` (counters gain ``_total``), or of one of its histogram series
    (``suffix`` ``_bucket``, ``_count``, ``_sum``). An unknown name raises `KeyError`: rules name catalogued
    metrics only."""
    spec = CATALOG[name]
    return spec.name + suffix if suffix else spec.exposed_name


def increase(selector: str, window: str, by: str) -> str:
    """Exact increase of a counter over ``window``, counting a series born inside it from zero.

    ``increase()`` misses the first increment of a series that appears already at 1 (the controller's first
    decision happens before the first scrape) and extrapolates; this takes the difference to the value
    ``window`` ago per series, or the whole value of a series younger than that, and sums per ``by``.
    """
    return f"sum by ({by}) (clamp_min({selector} - {selector} offset {window}, 0) or {selector})"


@dataclass(frozen=True)
class Record:
    """One recording rule; ``help`` says what the series means (dashboards use it as panel description)."""

    record: str
    expr: str
    help: str

    def __post_init__(self) -> None:
        level, name, operation = self.record.split(":")
        if not (level.startswith(LEVEL) and name.startswith("kingmaker_") and operation):
            raise ValueError(f"{self.record}: recording rules are named {LEVEL}[_labels]:kingmaker_...:operation")

    def __getitem__(self, matchers: str) -> str:
        """``RULE['arm="challenger"']`` -> ``record{arm="challenger"}``: the series with extra matchers."""
        return f"{self.record}{{{matchers}}}"

    def to_dict(self) -> dict[str, object]:
        return {"record": self.record, "expr": self.expr}


class Severity(StrEnum):
    CRITICAL = "critical"  # someone acts now
    WARNING = "warning"  # someone looks today
    INFO = "info"  # worth knowing; nothing to do unless it surprises


@dataclass(frozen=True)
class Alert:
    alert: str
    expr: str
    severity: Severity
    summary: str
    description: str
    for_: str = "0m"

    @property
    def runbook_url(self) -> str:
        return f"{RUNBOOK_BASE}/{self.alert}.md"

    def to_dict(self) -> dict[str, object]:
        rule: dict[str, object] = {"alert": self.alert, "expr": self.expr}
        if self.for_ != "0m":
            rule["for"] = self.for_
        rule["labels"] = {"severity": self.severity.value}
        rule["annotations"] = {"summary": self.summary, "description": self.description,
                               "runbook_url": self.runbook_url}
        return rule


@dataclass(frozen=True)
class Group:
    name: str
    rules: tuple[Record, ...] | tuple[Alert, ...]

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "rules": [r.to_dict() for r in self.rules]}


# --- recording rules: serving (Router and Scorers) --------------------------------------------------

_calls = metric("kingmaker_router_upstream_requests")
#: The controller's definition of the challenger's error rate (`k8s.observe.GuardrailQueries`): failed calls
#: over calls made; a rejected request (4xx) was made, a skipped shadow call or an open circuit was not.
FAILED_OUTCOMES = "timeout|connect_error|http_error|bad_response"
NOT_CALLS = "shadow_skipped|circuit_open"

REQUESTS = Record(
    f"{LEVEL}_arm_code:kingmaker_router_requests:rate5m",
    f"sum by ({BY}, arm, code) (rate({metric('kingmaker_router_requests')}[{RATE}]))",
    "Requests answered to clients per second, by the arm that answered and the HTTP status")
UPSTREAM_CALLS = Record(
    f"{LEVEL}_arm:kingmaker_router_upstream_requests:rate5m",
    f'sum by ({BY}, arm) (rate({_calls}{{outcome!~"{NOT_CALLS}"}}[{RATE}]))',
    "Calls the Router made to each arm per second (skipped shadow calls and open-circuit skips excluded)")
UPSTREAM_FAILED = Record(
    f"{LEVEL}_arm:kingmaker_router_upstream_requests_failed:rate5m",
    f'sum by ({BY}, arm) (rate({_calls}{{outcome=~"{FAILED_OUTCOMES}"}}[{RATE}]))',
    "Failed calls to each arm per second: timeout, connection error, 5xx or an unreadable answer")
UPSTREAM_FAILED_RATIO = Record(
    f"{LEVEL}_arm:kingmaker_router_upstream_requests_failed:ratio_rate5m",
    f"{UPSTREAM_FAILED.record} / ({UPSTREAM_CALLS.record} > 0)",
    "Share of the calls to each arm that failed: what the controller's error-rate guardrail reads")
LATENCY_P50 = Record(
    f"{LEVEL}_arm:kingmaker_router_request_duration_seconds:p50_rate5m",
    f"histogram_quantile(0.5, sum by ({BY}, arm, le) "
    f"(rate({metric('kingmaker_router_request_duration_seconds', '_bucket')}[{RATE}])))",
    "Median end-to-end latency the client sees, by the arm that answered")
LATENCY_P99 = Record(
    f"{LEVEL}_arm:kingmaker_router_request_duration_seconds:p99_rate5m",
    LATENCY_P50.expr.replace("histogram_quantile(0.5,", "histogram_quantile(0.99,"),
    "99th percentile end-to-end latency the client sees, by the arm that answered")
UPSTREAM_P99 = Record(
    f"{LEVEL}_arm:kingmaker_router_upstream_duration_seconds:p99_rate5m",
    f"histogram_quantile(0.99, sum by ({BY}, arm, le) "
    f"(rate({metric('kingmaker_router_upstream_duration_seconds', '_bucket')}[{RATE}])))",
    "99th percentile latency of the Router's calls to each arm: what the p99 guardrail reads")
ROUTED_SHARE = Record(
    f"{LEVEL}_arm_mode:kingmaker_router_routed:ratio_rate5m",
    f"sum by ({BY}, arm, mode) (rate({metric('kingmaker_router_routed')}[{RATE}]))\n"
    f"  / ignoring (arm) group_left ()\n"
    f"sum by ({BY}, mode) (rate({metric('kingmaker_router_routed')}[{RATE}]))",
    "Share of requests the routing function assigned to each arm (before any fallback)")
WEIGHT = Record(
    f"{LEVEL}:kingmaker_router_challenger_weight:max",
    f"max by ({BY}) ({metric('kingmaker_router_challenger_weight')})",
    "The challenger share configured in the Router (0..1)")
FALLBACKS = Record(
    f"{LEVEL}_reason:kingmaker_router_fallbacks:rate5m",
    f"sum by ({BY}, reason) (rate({metric('kingmaker_router_fallbacks')}[{RATE}]))",
    "Challenger-routed requests answered by the champion instead, per second, by the challenger's failure")
UNAVAILABLE = Record(
    f"{LEVEL}_reason:kingmaker_router_unavailable:rate5m",
    f"sum by ({BY}, reason) (rate({metric('kingmaker_router_unavailable')}[{RATE}]))",
    "503 answers per second because the champion could not answer, by reason")
UNAVAILABLE_RATIO = Record(
    f"{LEVEL}:kingmaker_router_unavailable:ratio_rate5m",
    f"sum by ({BY}) (rate({metric('kingmaker_router_unavailable')}[{RATE}]))\n"
    f"  /\n"
    f"(sum by ({BY}) (rate({metric('kingmaker_router_requests')}{{code!=\"503\"}}[{RATE}]))"
    f" + sum by ({BY}) (rate({metric('kingmaker_router_unavailable')}[{RATE}])))",
    "Share of client requests answered 503 because the champion could not answer")
LOG_ROWS = Record(
    f"{LEVEL}_outcome:kingmaker_prediction_log_rows:rate5m",
    f"sum by ({BY}, outcome) (rate({metric('kingmaker_prediction_log_rows')}[{RATE}]))",
    "Prediction-log rows per second by outcome: written, failed (retried) or dropped (lost)")
LOG_FLUSHES = Record(
    f"{LEVEL}:kingmaker_prediction_log_flush_duration_seconds_count:rate5m",
    f"sum by ({BY}) (rate({metric('kingmaker_prediction_log_flush_duration_seconds', '_count')}[{RATE}]))",
    "Prediction-log files written per second")
LOG_FLUSH_P99 = Record(
    f"{LEVEL}:kingmaker_prediction_log_flush_duration_seconds:p99_rate5m",
    f"histogram_quantile(0.99, sum by ({BY}, le) "
    f"(rate({metric('kingmaker_prediction_log_flush_duration_seconds', '_bucket')}[{RATE}])))",
    "99th percentile time to write one prediction-log file")
LOG_LAG = Record(
    f"{LEVEL}:kingmaker_prediction_log_lag_seconds:max",
    f"max by ({BY}) ({metric('kingmaker_prediction_log_lag_seconds')})",
    "Age of the oldest prediction-log row not yet written, over the Router replicas")
LABELS = Record(
    f"{LEVEL}_outcome:kingmaker_feedback_labels:rate5m",
    f"sum by ({BY}, outcome) (rate({metric('kingmaker_feedback_labels')}[{RATE}]))",
    "Fraud labels received on /feedback per second: written (new), updated or duplicate")
SCORES = Record(
    f"{LEVEL}_arm_le:kingmaker_score_bucket:rate5m",
    f"sum by ({BY}, arm, le) (rate({metric('kingmaker_score', '_bucket')}[{RATE}]))",
    "Scores per second in each cumulative score bucket, by arm: the score distribution")
DECISIONS = Record(
    f"{LEVEL}_arm_decision:kingmaker_decisions:rate5m",
    f"sum by ({BY}, arm, decision) (rate({metric('kingmaker_decisions')}[{RATE}]))",
    "Scorer decisions at the registered threshold per second, by arm and decision (fraud or legit)")

# --- recording rules: drift job (pushed to the Pushgateway) -----------------------------------------

FEATURE_PSI_MAX = Record(
    f"{LEVEL}:kingmaker_drift_feature_psi:max",
    f"max by ({BY}) ({metric('kingmaker_drift_feature_psi')})",
    "Largest PSI of any feature in the last drift run against the champion's training data")
SEVERE_FEATURES = Record(
    f"{LEVEL}:kingmaker_drift_feature_severity:count_severe",
    f"count by ({BY}) ({metric('kingmaker_drift_feature_severity')} >= 2)\n"
    f"  or\n"
    f"max by ({BY}) ({metric('kingmaker_drift_feature_severity')}) * 0",
    "Features whose drift is severe (PSI >= 0.25, or >= 0.1 confirmed by KS) in the last drift run")
SCORE_PSI = Record(
    f"{LEVEL}_arm:kingmaker_drift_score_psi:max",
    f"max by ({BY}, arm) ({metric('kingmaker_drift_score_psi')})",
    "PSI of each arm's live scores against its own model version's reference scores")
ARMS_PSI = Record(
    f"{LEVEL}:kingmaker_drift_arms_score_psi:max",
    f"max by ({BY}) ({metric('kingmaker_drift_arms_score_psi')})",
    "PSI between the champion's and the challenger's scores in the same window")
DRIFT_LAST_SUCCESS = Record(
    f"{LEVEL}:kingmaker_drift_last_success_timestamp_seconds:max",
    f"max by ({BY}) ({metric('kingmaker_drift_last_success_timestamp_seconds')})",
    "Unix time the drift job last completed (it pushes nothing when it fails)")

# --- recording rules: promotion controller ----------------------------------------------------------

_decisions = metric("kingmaker_controller_decisions")
_reconciles = metric("kingmaker_controller_reconciles")
CONTROLLER_DECISIONS = Record(
    f"{LEVEL}_outcome_reason:kingmaker_controller_decisions:increase1h",
    increase(_decisions, "1h", f"{BY}, outcome, reason"),
    "Decisions of the promotion controller in the last hour, by outcome and reason")
RECONCILES = Record(
    f"{LEVEL}_result:kingmaker_controller_reconciles:increase1h",
    increase(_reconciles, "1h", f"{BY}, result"),
    "Reconciles in the last hour by result: ok, temporary_error (retried), permanent_error, not_leader")
LAST_RECONCILE = Record(
    f"{LEVEL}:kingmaker_controller_last_reconcile_timestamp_seconds:max_over_time1d",
    f"max by ({BY}) (max_over_time({metric('kingmaker_controller_last_reconcile_timestamp_seconds')}[1d]))",
    "Unix time of the last completed reconcile, over every replica and the last day (survives a dead process)")
INTERVAL = Record(
    f"{LEVEL}:kingmaker_controller_evaluation_interval_seconds:max_over_time1d",
    f"max by ({BY}) (max_over_time({metric('kingmaker_controller_evaluation_interval_seconds')}[1d]))",
    "The resource's evaluation interval")
GUARDRAIL = Record(
    f"{LEVEL}_guardrail:kingmaker_controller_guardrail_limit:max",
    f"max by ({BY}, guardrail) ({metric('kingmaker_controller_guardrail_limit')})",
    "The resource's guardrails (error_rate, p99_latency_seconds, score_psi) as its controller reads them")

RECORDING = (
    Group("kingmaker.serving.rules", (REQUESTS, UPSTREAM_CALLS, UPSTREAM_FAILED, UPSTREAM_FAILED_RATIO, LATENCY_P50,
                                      LATENCY_P99, UPSTREAM_P99, ROUTED_SHARE, WEIGHT, FALLBACKS, UNAVAILABLE,
                                      UNAVAILABLE_RATIO, LOG_ROWS, LOG_FLUSHES, LOG_FLUSH_P99, LOG_LAG, LABELS,
                                      SCORES, DECISIONS)),
    Group("kingmaker.drift.rules", (FEATURE_PSI_MAX, SEVERE_FEATURES, SCORE_PSI, ARMS_PSI, DRIFT_LAST_SUCCESS)),
    Group("kingmaker.controller.rules", (CONTROLLER_DECISIONS, RECONCILES, LAST_RECONCILE, INTERVAL, GUARDRAIL)),
)

# --- alerts -----------------------------------------------------------------------------------------

_ON = f"on ({BY}) group_left ()"
_AND = f"and on ({BY})"
_WHERE = "{{ $labels.championchallenger }} in {{ $labels.namespace }}"
_zero_per_router = f"{WEIGHT.record} * 0"  # one 0 per live Router: a sum that has no series yet counts as 0
_traffic = f"sum by ({BY}) ({REQUESTS.record})"
_challenger_failed = UPSTREAM_FAILED_RATIO['arm="challenger"']
_challenger_p99 = UPSTREAM_P99['arm="challenger"']
_challenger_share = ROUTED_SHARE['arm="challenger", mode="split"']
_max_error_rate = GUARDRAIL['guardrail="error_rate"']
_max_p99 = GUARDRAIL['guardrail="p99_latency_seconds"']
_max_psi = GUARDRAIL['guardrail="score_psi"']
_rows_lost = LOG_ROWS['outcome=~"failed|dropped"']
_new_labels = LABELS['outcome=~"written|updated"']
_phase = metric("kingmaker_controller_phase")
_swapping = f'{_phase}{{phase=~"{Phase.PROMOTING.value}|{Phase.ROLLING_BACK.value}"}}'
_error = f'{_phase}{{phase="{Phase.ERROR.value}"}}'
_rollbacks = CONTROLLER_DECISIONS[f'outcome="{Outcome.ROLLBACK.value}"']
_psi_value = '{{ $value | printf "%.3f" }}'
_rows_per_second = '{{ $value | printf "%.2f" }}'

SERVING_ALERTS = (
    Alert("KingmakerChallengerErrorRateHigh",
          f"{_challenger_failed}\n  > {_ON}\n{_max_error_rate}",
          Severity.WARNING, "The challenger fails more requests than its guardrail allows",
          f"Calls to the challenger of {_WHERE} fail at {{{{ $value | humanizePercentage }}}} over 5 minutes, above "
          "the resource's maxErrorRate. The controller rolls the challenger back at its next look; challenger-routed "
          "requests fall back to the champion meanwhile.", "5m"),
    Alert("KingmakerChallengerLatencyHigh",
          f"{_challenger_p99}\n  > {_ON}\n{_max_p99}",
          Severity.WARNING, "The challenger's p99 latency is over its guardrail",
          f"The Router's calls to the challenger of {_WHERE} take {{{{ $value | humanizeDuration }}}} at the 99th "
          "percentile, above the resource's maxP99LatencySeconds; the controller rolls it back at its next look.",
          "5m"),
    Alert("KingmakerChampionUnavailable",
          f"{UNAVAILABLE_RATIO.record} > {MAX_UNAVAILABLE_SHARE}",
          Severity.CRITICAL, "Clients get 503s: the champion cannot answer",
          f"{{{{ $value | humanizePercentage }}}} of the requests to {_WHERE} were answered 503 over 5 minutes because "
          "the champion arm timed out, refused connections or failed. Nothing else answers for it.", "2m"),
    Alert("KingmakerRoutedShareOffWeight",
          f"abs({_challenger_share} - {_ON} {WEIGHT.record}) > {MAX_SHARE_OFF}\n  {_AND}\n{_traffic} > 1",
          Severity.WARNING, "The challenger's routed share is off its configured weight",
          f"The routing function sends {{{{ $value | humanizePercentage }}}} more or less of the traffic of {_WHERE} "
          "to the challenger than its configured weight, for 30 minutes. The evidence of a split experiment "
          "assumes that ratio.", "30m"),
    Alert("KingmakerNoTraffic",
          f"({_traffic} or {_zero_per_router}) == 0",
          Severity.WARNING, "The Router answers no requests",
          f"The Router of {_WHERE} is up but answered no request for 10 minutes: clients cannot reach it, or "
          "send their traffic elsewhere. No traffic also means no evidence for the controller.", "10m"),
    Alert("KingmakerScorerServingFromCache",
          f"max by ({BY}, arm, model_version) ({metric('kingmaker_scorer_model_from_cache')}) > 0",
          Severity.WARNING, "A Scorer serves its cached model: the registry was unreachable at its start",
          f"A {{{{ $labels.arm }}}} Scorer of {_WHERE} serves version {{{{ $labels.model_version }}}} from its local "
          "model cache because the MLflow registry was unreachable when it started, for 15 minutes. It answers "
          "normally and retries the registry; Scorers started without a cached copy stay unready meanwhile.", "15m"),
    Alert("KingmakerPredictionLogNotFlushing",
          f"{LOG_LAG.record} > {LOG_MAX_LAG_SECONDS}",
          Severity.WARNING, "Prediction-log rows are not being written",
          f"The oldest unwritten prediction-log row of {_WHERE} is {{{{ $value | humanizeDuration }}}} old. The "
          "Router keeps rows in memory while the log store is slow or down, and drops the oldest when its buffer "
          "is full.", "5m"),
    Alert("KingmakerPredictionLogFailing",
          f"sum by ({BY}) ({_rows_lost}) > 0",
          Severity.CRITICAL, "Writing the prediction log fails",
          f"Prediction-log writes of {_WHERE} fail ({_rows_per_second} rows/s retried or dropped). Dropped "
          "rows are lost for audit and for the promotion decision.", "5m"),
    Alert("KingmakerLabelsNotArriving",
          f"(sum by ({BY}) ({_new_labels}) or {_zero_per_router}) == 0\n  {_AND}\n{_traffic} > 0",
          Severity.WARNING, "No fraud labels arrive: the controller is starved",
          f"{_WHERE} serves traffic but received no new fraud label on /feedback for 2 hours. Without matured "
          "labels the controller can only HOLD.", "2h"),
)

DRIFT_ALERTS = (
    Alert("KingmakerSevereFeatureDrift",
          f"{SEVERE_FEATURES.record} > 0",
          Severity.WARNING, "Live features drifted severely from the champion's training data",
          f"The last drift run of {_WHERE} found {{{{ $value }}}} feature(s) with severe drift (PSI >= 0.25, or "
          ">= 0.1 confirmed by a KS test). The champion scores traffic unlike what it was trained on."),
    Alert("KingmakerArmScoreDrift",
          f"{ARMS_PSI.record}\n  > {_ON}\n{_max_psi}",
          Severity.WARNING, "Champion and challenger score the same traffic very differently",
          f"The PSI between the champion's and the challenger's scores of {_WHERE} is {_psi_value}, above the "
          "resource's maxScorePsi: the controller rolls the challenger back at its next look."),
    Alert("KingmakerDriftJobStale",
          f"time() - {DRIFT_LAST_SUCCESS.record} > {DRIFT_MAX_AGE_SECONDS}",
          Severity.WARNING, f"The drift job has not completed for more than {DRIFT_MAX_AGE_SECONDS // 3600} hours",
          f"The last successful drift run of {_WHERE} was {{{{ $value | humanizeDuration }}}} ago. A failing run "
          "pushes nothing, so this is also how a broken CronJob shows. Without a fresh arm-vs-arm PSI the "
          "controller does not promote.", "10m"),
)

CONTROLLER_ALERTS = (
    Alert("KingmakerControllerNotReconciling",
          f"time() - {LAST_RECONCILE.record} > 3 * {INTERVAL.record}",
          Severity.CRITICAL, "The promotion controller has not reconciled for three intervals",
          f"No reconcile of {_WHERE} completed for {{{{ $value | humanizeDuration }}}}: the controller is down, "
          "not leading, or every reconcile fails. Promotions, rollbacks and guardrails wait.", "5m"),
    Alert("KingmakerPromotionStuck",
          f"max by ({BY}, phase) ({_swapping}) == 1",
          Severity.CRITICAL, "A promotion or rollback is stuck half-way",
          f"{_WHERE} has been in phase {{{{ $labels.phase }}}} for 15 minutes. The controller finishes an "
          "interrupted swap at its next reconcile, so a swap this long means each attempt fails.", "15m"),
    Alert("KingmakerChampionChallengerError",
          f"max by ({BY}) ({_error}) == 1",
          Severity.WARNING, "The ChampionChallenger is in phase Error",
          f"{_WHERE} is in phase Error: a bad spec, contradictory observations, or a registry changed under a "
          "swap. The controller does not act until a human fixes it.", "5m"),
    Alert("KingmakerChallengerRolledBack",
          f"{_rollbacks} > 0",
          Severity.INFO, "The controller rolled a challenger back",
          f"The controller rolled back the challenger of {_WHERE} in the last hour ({{{{ $labels.reason }}}}). "
          "It takes no traffic now; the champion stays."),
)

ALERTING = (
    Group("kingmaker.serving.alerts", SERVING_ALERTS),
    Group("kingmaker.drift.alerts", DRIFT_ALERTS),
    Group("kingmaker.controller.alerts", CONTROLLER_ALERTS),
)

#: What ``python -m monitoring.generate`` writes to ``monitoring/rules/``.
FILES = {"kingmaker-recording.yaml": RECORDING, "kingmaker-alerts.yaml": ALERTING}


def records() -> tuple[Record, ...]:
    return tuple(r for g in RECORDING for r in g.rules if isinstance(r, Record))


def alerts() -> tuple[Alert, ...]:
    return tuple(a for g in ALERTING for a in g.rules if isinstance(a, Alert))
