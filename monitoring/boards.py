"""The Grafana dashboards, built with Grafana's Foundation SDK (``grafana-foundation-sdk``) from the catalog
(`kingmaker.catalog`: metric names and their help) and the recorded series of `monitoring.ruleset`.

Label contract. Every panel selects one resource with ``namespace="$namespace"`` and
``championchallenger="$championchallenger"``. In a cluster the chart's ServiceMonitor/PodMonitor relabels the
pod label ``kingmaker.io/championchallenger`` to the Prometheus label ``championchallenger`` and Kubernetes service
discovery gives ``namespace``; the controller's own metrics carry ``championchallenger`` themselves (its pod
must not carry the pod label, or it must be scraped with ``honor_labels``); the drift job pushes both labels in
its Pushgateway group (``kingmaker drift --pushgateway-label``), scraped with ``honor_labels: true``. Locally,
the Prometheus configuration adds both as static labels.

Each dashboard has a data-source variable (no hard-coded data-source UID), the two resource variables, and
a unit on every panel. `queries` lists every query of a generated model, for the tests that run them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import bargauge, common, heatmap, prometheus, stat, statetimeline, timeseries
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import heatmap as hm
from grafana_foundation_sdk.models import prometheus as pm

from k8s.decide import Outcome, Reason
from k8s.policy import Guardrails
from kingmaker.catalog import CATALOG
from monitoring import ruleset as r
from monitoring.ruleset import Record, metric

DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
#: The resource every query selects (see the label contract above).
THIS = 'namespace="$namespace", championchallenger="$championchallenger"'
TIME_FROM = "now-3h"
TAGS = ["kingmaker"]

Panel = Any  # an SDK panel builder (timeseries, stat, ...)


def sel(name: str, extra: str = "") -> str:
    """``name{<this resource>, extra}``: a recorded series or a scraped metric of the selected resource."""
    return f"{name}{{{THIS}{', ' + extra if extra else ''}}}"


def about(*sources: Record | str) -> str:
    """Panel description from what the queries read: a recording rule's help, or a catalog metric's help."""
    return " ".join(s.help if isinstance(s, Record) else CATALOG[s].help for s in sources) + "."


def query(expr: str, legend: str = "", *, ref: str = "A", instant: bool = False,
          heatmap_format: bool = False) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE).editor_mode(pm.QueryEditorMode.CODE)
    if legend:
        q = q.legend_format(legend)
    if heatmap_format:
        q = q.format(pm.PromQueryFormat.HEATMAP)
    return q.instant() if instant else q.range()


def _queries(*pairs: tuple[str, str]) -> list[cogbuilder.Builder[cogvariants.Dataquery]]:
    return [query(expr, legend, ref=chr(ord("A") + i)) for i, (expr, legend) in enumerate(pairs)]


def _thresholds(*steps: tuple[float | None, str]) -> db.ThresholdsConfig:
    return db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
        [dm.Threshold(value=v, color=c) for v, c in steps])


def graph(title: str, description: str, unit: str, *series: tuple[str, str], width: int = 12, height: int = 8,
          log_scale: bool = False, bars: bool = False, minimum: float | None = None) -> Panel:
    """A time series panel: ``series`` are (PromQL, legend) pairs."""
    p = (timeseries.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE)
         .span(width).height(height).targets(_queries(*series)).fill_opacity(10)
         .legend(common.VizLegendOptions().display_mode(cm.LegendDisplayMode.LIST)
                 .placement(cm.LegendPlacement.BOTTOM).show_legend(True)))
    if log_scale:
        p = p.scale_distribution(common.ScaleDistributionConfig().type(cm.ScaleDistribution.LOG).log(10))
    if bars:
        p = p.draw_style(cm.GraphDrawStyle.BARS).fill_opacity(80)
    if minimum is not None:
        p = p.min(minimum)
    return p


def single(title: str, description: str, unit: str, expr: str, legend: str = "", *, width: int = 6,
           thresholds: db.ThresholdsConfig | None = None, mappings: dict[str, tuple[str, str]] | None = None,
           show_name: bool = False) -> Panel:
    """A stat panel showing the latest value (or, with ``show_name``, the legend of the series that is there)."""
    p = (stat.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE).span(width).height(5)
         .targets([query(expr, legend)])
         .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
         .graph_mode(cm.BigValueGraphMode.NONE if show_name else cm.BigValueGraphMode.AREA)
         .text_mode(cm.BigValueTextMode.NAME if show_name else cm.BigValueTextMode.AUTO))
    if thresholds is not None:
        p = p.thresholds(thresholds)
    if mappings:
        p = p.mappings([dm.ValueMap(options={k: dm.ValueMappingResult(text=t, color=c)
                                             for k, (t, c) in mappings.items()})])
    return p


def score_heatmap(arm: str) -> Panel:
    buckets = sel(r.SCORES.record, 'arm="' + arm + '"')
    return (heatmap.Panel().title(f"{arm.capitalize()} score distribution")
            .description(about(r.SCORES) + f" Rows are score buckets (upper bounds), for the {arm} arm.")
            .unit("reqps").datasource(DATASOURCE).span(12).height(8)
            .targets([query(f"sum by (le) ({buckets})", "{{le}}", heatmap_format=True)])
            .calculate(False)
            .y_axis(heatmap.YAxisConfig().unit("none").decimals(2))
            .cell_values(heatmap.CellValues().unit("reqps"))
            .color(heatmap.HeatmapColorOptions().mode(hm.HeatmapColorMode.SCHEME).scheme("Oranges").steps(64)
                   .exponent(0.5)))


def row(title: str) -> db.Row:
    return db.Row(title)


# --- shared pieces ----------------------------------------------------------------------------------

_weight = metric("kingmaker_router_challenger_weight")
VARIABLES = (
    db.DatasourceVariable("datasource").label("Data source").type("prometheus"),
    db.QueryVariable("namespace").label("Namespace").datasource(DATASOURCE)
    .query(f"label_values({_weight}, namespace)")
    .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC),
    db.QueryVariable("championchallenger").label("ChampionChallenger").datasource(DATASOURCE)
    .query(f'label_values({_weight}{{namespace="$namespace"}}, championchallenger)')
    .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC),
)


def _swap(name: str, color: str, matchers: str) -> db.AnnotationQuery:
    decided = sel(metric("kingmaker_controller_decisions"), matchers)
    return (db.AnnotationQuery().name(name).datasource(DATASOURCE).enable(True).icon_color(color)
            .expr(f"{r.increase(decided, '2m', 'championchallenger, outcome, reason')} > 0"))


ANNOTATIONS = (
    _swap("Promotions", "green", f'outcome="{Outcome.PROMOTE.value}", reason="{Reason.CHALLENGER_BETTER.value}"'),
    _swap("Rollbacks", "red", f'outcome="{Outcome.ROLLBACK.value}"'),
)
_guard = r.GUARDRAIL.record
_phase = metric("kingmaker_controller_phase")
_versions = metric("kingmaker_controller_model_version_info")
_p = metric("kingmaker_controller_p_value")
_alpha = metric("kingmaker_controller_alpha")


def guardrail(name: str) -> str:
    """The resource's limit for guardrail ``name``."""
    return sel(_guard, f'guardrail="{name}"')


def reading(name: str) -> str:
    """The controller's last reading of guardrail ``name``."""
    series = sel(metric("kingmaker_controller_guardrail_reading"), 'guardrail="' + name + '"')
    return f"max({series})"


def phase_stat(width: int = 6) -> Panel:
    return single("Phase", CATALOG[_phase].help + ".", "none", f"max by (phase) ({sel(_phase)}) == 1", "{{phase}}",
                  width=width, show_name=True)


def versions_stat(width: int = 6) -> Panel:
    return single("Versions", CATALOG[_versions].help + ".", "none", f"max by (role, model_version) ({sel(_versions)})",
                  "{{role}} v{{model_version}}", width=width, show_name=True)


# --- the dashboards ---------------------------------------------------------------------------------

def overview() -> list[Panel]:
    share = sel(r.ROUTED_SHARE.record, 'mode="split"')
    return [
        single("Requests", about(r.REQUESTS), "reqps", f"sum({sel(r.REQUESTS.record)})"),
        single("Answered 503", about(r.UNAVAILABLE_RATIO), "percentunit", sel(r.UNAVAILABLE_RATIO.record),
               thresholds=_thresholds((None, "green"), (r.MAX_UNAVAILABLE_SHARE, "red"))),
        single("Challenger failures", about(r.UPSTREAM_FAILED_RATIO), "percentunit",
               sel(r.UPSTREAM_FAILED_RATIO.record, 'arm="challenger"'),
               thresholds=_thresholds((None, "green"), (Guardrails().max_error_rate, "red"))),
        phase_stat(),
        row("Traffic"),
        graph("Requests by arm and status", about(r.REQUESTS), "reqps",
              (f"sum by (arm, code) ({sel(r.REQUESTS.record)})", "{{arm}} {{code}}")),
        graph("Routed share against the configured weight", about(r.ROUTED_SHARE, r.WEIGHT), "percentunit",
              (f"max by (arm) ({share})", "{{arm}} routed"),
              (sel(r.WEIGHT.record), "challenger weight (configured)"), minimum=0),
        row("Errors and latency"),
        graph("Failed calls to each arm", about(r.UPSTREAM_FAILED_RATIO, r.GUARDRAIL), "percentunit",
              (sel(r.UPSTREAM_FAILED_RATIO.record), "{{arm}}"), (guardrail("error_rate"), "guardrail (challenger)")),
        graph("Latency by arm", about(r.LATENCY_P50, r.LATENCY_P99), "s",
              (sel(r.LATENCY_P50.record), "{{arm}} p50"), (sel(r.LATENCY_P99.record), "{{arm}} p99")),
        graph("Router-to-arm p99 latency", about(r.UPSTREAM_P99, r.GUARDRAIL), "s",
              (sel(r.UPSTREAM_P99.record), "{{arm}}"), (guardrail("p99_latency_seconds"), "guardrail (challenger)")),
        graph("Fallbacks and 503s by reason", about(r.FALLBACKS, r.UNAVAILABLE), "reqps",
              (sel(r.FALLBACKS.record), "fallback: {{reason}}"), (sel(r.UNAVAILABLE.record), "503: {{reason}}")),
    ]


def champion_vs_challenger() -> list[Panel]:
    labelled, positives = metric("kingmaker_controller_matured_labelled"), metric("kingmaker_controller_matured_positives")
    diff = metric("kingmaker_controller_criterion_difference")
    fraud = sel(r.DECISIONS.record, 'decision="fraud"')
    return [
        versions_stat(width=8),
        phase_stat(width=8),
        single("Looks at the evidence (last hour)", about(r.CONTROLLER_DECISIONS), "short",
               f"sum({sel(r.CONTROLLER_DECISIONS.record)})", width=8),
        row("The sequential test"),
        graph("Evidence: the bettor's wealth against the bar 1/alpha",
              "1 / always-valid p-value is the betting test's largest wealth so far: the challenger is proven better "
              "(better) or worse (worse) once it reaches 1/alpha. By Ville's inequality an equal challenger reaches "
              "it with probability at most alpha, however often the controller looks.", "none",
              (f"1 / max by (test) ({sel(_p)})", "wealth: challenger {{test}}"),
              (f"1 / max({sel(_alpha)})", "bar 1/alpha"), log_scale=True),
        graph("Criterion difference and its confidence sequence", CATALOG[diff].help + ".", "short",
              (f"max by (criterion, bound) ({sel(diff)})", "{{bound}} ({{criterion}})")),
        graph("Matured labelled transactions against the gate",
              about("kingmaker_controller_matured_labelled", "kingmaker_controller_min_matured_labelled"), "short", (f"max by (arm) ({sel(labelled)})", "{{arm}}"),
              (f"max({sel(metric('kingmaker_controller_min_matured_labelled'))})", "gate")),
        graph("Matured frauds against the gate", about("kingmaker_controller_matured_positives",
                                                       "kingmaker_controller_min_matured_positives"),
              "short", (f"max by (arm) ({sel(positives)})", "{{arm}}"),
              (f"max({sel(metric('kingmaker_controller_min_matured_positives'))})", "gate")),
        row("What each arm does"),
        score_heatmap("champion"),
        score_heatmap("challenger"),
        graph("Share flagged as fraud by arm", about(r.DECISIONS), "percentunit",
              (f"sum by (arm) ({fraud}) / sum by (arm) ({sel(r.DECISIONS.record)})", "{{arm}}")),
        graph("Decisions by outcome and reason (last hour)", about(r.CONTROLLER_DECISIONS), "short",
              (f"{sel(r.CONTROLLER_DECISIONS.record)} > 0", "{{outcome}} {{reason}}"), bars=True),
    ]


def drift() -> list[Panel]:
    psi, severity = metric("kingmaker_drift_feature_psi"), metric("kingmaker_drift_severity")
    psi_steps = _thresholds((None, "green"), (0.1, "orange"), (0.25, "red"))
    return [
        single("Since the last successful run", about(r.DRIFT_LAST_SUCCESS), "s",
               f"time() - {sel(r.DRIFT_LAST_SUCCESS.record)}",
               thresholds=_thresholds((None, "green"), (r.DRIFT_MAX_AGE_SECONDS, "red"))),
        single("Severity", about("kingmaker_drift_severity"), "none", f"max({sel(severity)})",
               mappings={"-1": ("insufficient data", "blue"), "0": ("none", "green"), "1": ("moderate", "orange"),
                         "2": ("severe", "red")}),
        single("Severely drifted features", about(r.SEVERE_FEATURES), "short", sel(r.SEVERE_FEATURES.record),
               thresholds=_thresholds((None, "green"), (1, "red"))),
        single("Run duration", about("kingmaker_drift_duration_seconds"), "s",
               f"max({sel(metric('kingmaker_drift_duration_seconds'))})"),
        (bargauge.Panel().title("Top features by PSI").description(about("kingmaker_drift_feature_psi"))
         .unit("none").datasource(DATASOURCE).span(12).height(10).min(0).thresholds(psi_steps)
         .targets([query(f"topk(10, max by (feature) ({sel(psi)}))", "{{feature}}", instant=True)])
         .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))),
        graph("Largest feature PSI", about(r.FEATURE_PSI_MAX), "none", (sel(r.FEATURE_PSI_MAX.record), "max PSI"),
              width=12, height=10, minimum=0),
        graph("Score PSI of each arm against its reference", about(r.SCORE_PSI), "none",
              (sel(r.SCORE_PSI.record), "{{arm}}"), minimum=0),
        graph("Champion vs challenger score PSI", about(r.ARMS_PSI, r.GUARDRAIL), "none",
              (sel(r.ARMS_PSI.record), "champion vs challenger"), (guardrail("score_psi"), "guardrail"), minimum=0),
        graph("Rows analysed per arm", about("kingmaker_drift_window_rows"), "short",
              (f"max by (arm) ({sel(metric('kingmaker_drift_window_rows'))})", "{{arm}}"), width=24),
    ]


def controller() -> list[Panel]:
    leader = metric("kingmaker_controller_leader")
    last = metric("kingmaker_controller_last_decision_timestamp_seconds")
    return [
        single("Leader", CATALOG[leader].help + ". Per controller process (not per resource).", "none",
               f'max by (instance) ({leader}{{namespace="$namespace"}})', "{{instance}}",
               mappings={"1": ("leading", "green"), "0": ("standby", "blue")}),
        phase_stat(),
        single("Since the last completed reconcile", about(r.LAST_RECONCILE), "s",
               f"time() - {sel(r.LAST_RECONCILE.record)}"),
        single("Since the last decision", about("kingmaker_controller_last_decision_timestamp_seconds"), "s",
               f"time() - max({sel(last)})"),
        graph("Reconciles by result (last hour)", about(r.RECONCILES), "short",
              (f"{sel(r.RECONCILES.record)} > 0", "{{result}}"), bars=True),
        graph("Decisions by reason (last hour)", about(r.CONTROLLER_DECISIONS), "short",
              (f"{sel(r.CONTROLLER_DECISIONS.record)} > 0", "{{outcome}} {{reason}}"), bars=True),
        (statetimeline.Panel().title("Phase over time").description(CATALOG[_phase].help + ".").unit("none")
         .datasource(DATASOURCE).span(24).height(5)
         .targets([query(f"max by (phase) ({sel(_phase)}) == 1", "{{phase}}")])),
        row("Guardrails as the controller read them"),
        graph("Challenger error rate", about("kingmaker_controller_guardrail_reading", r.GUARDRAIL), "percentunit",
              (reading("error_rate"), "reading"), (guardrail("error_rate"), "limit"), width=8),
        graph("Challenger p99 latency", about("kingmaker_controller_guardrail_reading", r.GUARDRAIL), "s",
              (reading("p99_latency_seconds"), "reading"), (guardrail("p99_latency_seconds"), "limit"), width=8),
        graph("Score PSI between the arms", about("kingmaker_controller_guardrail_reading", r.GUARDRAIL), "none",
              (reading("score_psi"), "reading"), (guardrail("score_psi"), "limit"), width=8),
    ]


def serving_internals() -> list[Panel]:
    def raw(name: str, suffix: str = "") -> str:
        return sel(metric(name, suffix))

    return [
        row("Prediction log and labels"),
        graph("Prediction-log rows by outcome", about(r.LOG_ROWS), "wps", (sel(r.LOG_ROWS.record), "{{outcome}}"),
              width=8),
        graph("Prediction-log flushes", about(r.LOG_FLUSHES, r.LOG_FLUSH_P99), "ops",
              (sel(r.LOG_FLUSHES.record), "files written/s"), width=8),
        graph("Prediction-log lag", about(r.LOG_LAG), "s", (sel(r.LOG_LAG.record), "oldest unwritten row"),
              (sel(r.LOG_FLUSH_P99.record), "p99 time to write a file"), width=8),
        graph("Labels received by outcome", about(r.LABELS), "cps", (sel(r.LABELS.record), "{{outcome}}"), width=12),
        graph("Labels for unknown request ids", about("kingmaker_feedback_unknown_ids"), "cps",
              (f"sum(rate({raw('kingmaker_feedback_unknown_ids')}[5m]))", "unknown ids"), width=12),
        row("Configuration and access"),
        graph("Router config reloads (last hour)", about("kingmaker_router_config_reloads"), "short",
              (f"sum by (outcome) (increase({raw('kingmaker_router_config_reloads')}[1h]))", "{{outcome}}"),
              width=12),
        graph("Requests refused by auth", about("kingmaker_auth_failures"), "reqps",
              (f"sum by (path, reason) (rate({raw('kingmaker_auth_failures')}[5m]))", "{{path}} {{reason}}"),
              width=12),
        row("Scorers"),
        single("Served versions", about("kingmaker_scorer_model_info"), "none",
               f"max by (arm, model_version) ({raw('kingmaker_scorer_model_info')})", "{{arm}} v{{model_version}}",
               width=12, show_name=True),
        single("Scorers serving a cached model (registry unreachable at start)",
               about("kingmaker_scorer_model_from_cache"), "none",
               f"sum by (arm, model_version) ({raw('kingmaker_scorer_model_from_cache')})",
               "{{arm}} v{{model_version}}", width=12, show_name=True),
        graph("Scorer requests", about("kingmaker_scorer_requests"), "reqps",
              (f"sum by (arm, endpoint, code) (rate({raw('kingmaker_scorer_requests')}[5m]))",
               "{{arm}} {{endpoint}} {{code}}"), width=8),
        graph("Scorer refusals and failures", about("kingmaker_scorer_errors"), "reqps",
              (f"sum by (arm, reason) (rate({raw('kingmaker_scorer_errors')}[5m]))", "{{arm}} {{reason}}"), width=8),
        graph("Scorer p99 time per request", about("kingmaker_scorer_request_duration_seconds"), "s",
              (f"histogram_quantile(0.99, sum by (arm, endpoint, le) "
               f"(rate({raw('kingmaker_scorer_request_duration_seconds', '_bucket')}[5m])))", "{{arm}} {{endpoint}}"),
              width=8),
        graph("Router calls to the arms by outcome", about("kingmaker_router_upstream_requests"), "reqps",
              (f"sum by (arm, outcome) (rate({raw('kingmaker_router_upstream_requests')}[5m])) > 0",
               "{{arm}} {{outcome}}"), width=12),
        graph("Split-mode pairing: rows scored by the other arm", about("kingmaker_router_pairs"), "cps",
              (f"sum by (arm, outcome) (rate({raw('kingmaker_router_pairs')}[5m]))", "{{arm}} {{outcome}}"),
              width=12),
        row("Process resources"),
        graph("CPU", about("process_cpu_seconds") + " Per process, in cores.", "short",
              (f"sum by (job, instance) (rate({raw('process_cpu_seconds')}[5m]))", "{{job}} {{instance}}"), width=8),
        graph("Resident memory", about("process_resident_memory_bytes"), "bytes",
              (raw("process_resident_memory_bytes"), "{{job}} {{instance}}"), width=8),
        graph("Open file descriptors", about("process_open_fds"), "short",
              (raw("process_open_fds"), "{{job}} {{instance}}"), width=8),
    ]


@dataclass(frozen=True)
class Board:
    uid: str
    title: str
    description: str
    panels: Sequence[Panel]
    annotations: bool = False


def boards() -> tuple[Board, ...]:
    return (
        Board("kingmaker-overview", "Kingmaker / Overview",
              "The SRE's first screen: traffic, errors and latency per arm, routed share, fallbacks and 503s.",
              overview(), annotations=True),
        Board("kingmaker-champion-challenger", "Kingmaker / Champion vs challenger",
              "The experiment: the sequential test's evidence against 1/alpha, labels matured against the gates, "
              "score distributions and decisions per arm; promotions and rollbacks as annotations.",
              champion_vs_challenger(), annotations=True),
        Board("kingmaker-drift", "Kingmaker / Drift",
              "The drift job's last run: features by PSI, score drift per arm and between arms, and its freshness.",
              drift()),
        Board("kingmaker-controller", "Kingmaker / Controller",
              "The promotion controller: reconciles, decisions by reason, phase, leadership and guardrails.",
              controller()),
        Board("kingmaker-serving-internals", "Kingmaker / Serving internals",
              "Prediction log and labels, configuration reloads, auth failures, Scorers and process resources.",
              serving_internals()),
    )


def build(board: Board) -> dict[str, Any]:
    """The Grafana JSON model of ``board``."""
    d = (db.Dashboard(board.title).uid(board.uid).description(board.description).tags(TAGS).editable()
         .time(TIME_FROM, "now").refresh("1m").timezone("browser").tooltip(dm.DashboardCursorSync.CROSSHAIR)
         .variables(list(VARIABLES)))
    if board.annotations:
        d = d.annotations(list(ANNOTATIONS))
    for panel_id, panel in enumerate(board.panels, start=1):
        d = d.with_row(panel.id(panel_id)) if isinstance(panel, db.Row) else d.with_panel(panel.id(panel_id))
    model: dict[str, Any] = json.loads(json.dumps(d.build(), cls=JSONEncoder))
    return model


def models() -> dict[str, dict[str, Any]]:
    return {b.uid: build(b) for b in boards()}


# --- what the generated models query ------------------------------------------------------------------

@dataclass(frozen=True)
class Query:
    """One query of a dashboard model: a panel target, an annotation, or a variable's ``label_values``."""

    dashboard: str
    where: str  # panel title, "annotation: <name>" or "variable: <name>"
    expr: str  # PromQL with Grafana variables (a variable: the series selector of label_values)
    instant: bool = False
    label: str | None = None  # variables: the label whose values are listed


def queries(model: dict[str, Any]) -> Iterator[Query]:
    title = str(model["title"])
    for panel in model.get("panels", []):
        for target in panel.get("targets", []):
            yield Query(title, str(panel["title"]), str(target["expr"]), bool(target.get("instant")))
    for ann in (model.get("annotations") or {}).get("list", []):
        if ann.get("expr"):
            yield Query(title, f"annotation: {ann['name']}", str(ann["expr"]))
    for var in (model.get("templating") or {}).get("list", []):
        text = var.get("query")
        if var.get("type") == "query" and isinstance(text, str) and text.startswith("label_values("):
            selector, _, label = text.removeprefix("label_values(").removesuffix(")").rpartition(",")
            yield Query(title, f"variable: {var['name']}", selector.strip(), label=label.strip())


def substitute(expr: str, values: dict[str, str]) -> str:
    """``expr`` with ``$name`` replaced by ``values[name]`` (what Grafana sends for single-value variables)."""
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(f"${{{name}}}", values[name]).replace(f"${name}", values[name])
    return expr
