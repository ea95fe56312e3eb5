"""The demo's report: one self-contained HTML file (plots as inline base64 PNGs, no script, no network).

`render` takes the decision record ``kingmaker demo`` writes (``decision.json``: the controller's status, its
evidence trace, the events, the replay's counts) and the prediction and label logs of the run. The numbers are
pure functions of those (`arm_quality`, `cost_per_1k`, `what_happened`), tested without a stack; only
`latency_from_prometheus` talks to a server.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from kingmaker.localstack import PrometheusHTTP

QUANTILES = (0.5, 0.95, 0.99)


# --- numbers --------------------------------------------------------------------------------------

def cost_per_1k(flagged: np.ndarray, label: np.ndarray, review_cost: float, missed_cost: float) -> float:
    """Expected cost per 1,000 transactions: every alert costs a review, every missed fraud its cost."""
    n = len(label)
    if n == 0:
        return math.nan
    alerts = int(flagged.sum())
    missed = int((label & ~flagged).sum())
    return 1000.0 * (review_cost * alerts + missed_cost * missed) / n


@dataclass(frozen=True)
class ArmQuality:
    version: str
    rows: int  # labelled rows this version scored
    frauds: int
    average_precision: float
    recall_at_own: float
    alert_rate_own: float
    cost_own: float  # at the threshold it served with
    threshold_matched: float
    recall_matched: float
    cost_matched: float  # flagging the top `alert_rate` of its scores on the replay
    precision: np.ndarray
    recall: np.ndarray


def arm_quality(version: str, score: np.ndarray, decision: np.ndarray, label: np.ndarray, *, alert_rate: float,
                review_cost: float, missed_cost: float) -> ArmQuality:
    """One model version's ranking and cost on the replayed labels."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    label = label.astype(bool)
    frauds = int(label.sum())
    both = frauds > 0 and frauds < len(label)
    precision, recall, _ = precision_recall_curve(label, score) if both else (np.array([]), np.array([]), None)
    threshold = float(np.quantile(score, 1.0 - alert_rate)) if len(score) else math.nan
    matched = score > threshold
    return ArmQuality(
        version=version, rows=len(label), frauds=frauds,
        average_precision=float(average_precision_score(label, score)) if both else math.nan,
        recall_at_own=float((decision & label).sum() / frauds) if frauds else math.nan,
        alert_rate_own=float(decision.mean()) if len(decision) else math.nan,
        cost_own=cost_per_1k(decision.astype(bool), label, review_cost, missed_cost),
        threshold_matched=threshold, recall_matched=float((matched & label).sum() / frauds) if frauds else math.nan,
        cost_matched=cost_per_1k(matched, label, review_cost, missed_cost), precision=precision, recall=recall)


def _evidence_number(entry: Mapping[str, Any], *path: str) -> float | None:
    value: Any = entry.get("evidence") or {}
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def evidence_series(trace: Sequence[Mapping[str, Any]]) -> tuple[list[float], list[float], list[float]]:
    """(challenger's matured labelled rows, wealth for "better" = 1/p, wealth for "worse") per look with a test."""
    n, better, worse = [], [], []
    for entry in trace:
        labelled = _evidence_number(entry, "challenger", "labelled")
        p_better, p_worse = _evidence_number(entry, "p_better"), _evidence_number(entry, "p_worse")
        if labelled is None or (p_better is None and p_worse is None):
            continue
        n.append(labelled)
        better.append(1.0 / max(p_better, 1e-12) if p_better is not None else math.nan)
        worse.append(1.0 / max(p_worse, 1e-12) if p_worse is not None else math.nan)
    return n, better, worse


def what_happened(record: Mapping[str, Any], qualities: Sequence[ArmQuality], candidates: Mapping[str, str]) -> str:
    """The story of the run in a few sentences, from the decision record."""
    data, req = record["data"], record["requests"]
    champion, challenger = record["champion_version"], record["challenger_version"]
    status = record.get("status") or {}
    last = status.get("lastEvaluation") or {}
    decided = record.get("decision")
    name = {v: f"v{v} ({candidates.get(v, '?')})" for v in (champion, challenger)}
    parts = [f"{data['replay_rows']:,} transactions ({data['replay_frauds']} frauds) that no model had seen were "
             f"replayed in time order through the Router in {record['mode']} mode, champion {name[champion]} against "
             f"challenger {name[challenger]}; {req['failed']} of {req['sent']:,} requests failed."]
    looks = len(record.get("trace") or ())
    if decided and decided.get("action") == "Promoted":
        parts.append(f"After {looks} evaluations the controller promoted {name[challenger]}: "
                     f"{last.get('message') or 'the challenger was proven better'}.")
    elif decided and decided.get("action") == "RolledBack":
        parts.append(f"After {looks} evaluations the controller rolled {name[challenger]} back: "
                     f"{last.get('message') or ''}.")
    else:
        parts.append(f"The challenger was not promoted: the data ran out after {looks} evaluations, the last "
                     f"{last.get('outcome', 'none')} ({last.get('reason', 'no evaluation')}): "
                     f"{last.get('message') or 'no evidence'}.")
    by_version = {q.version: q for q in qualities}
    if champion in by_version and challenger in by_version:
        a, b = by_version[champion], by_version[challenger]
        better = ("the same" if abs(b.cost_matched - a.cost_matched) < 0.05
                  else "lower" if b.cost_matched < a.cost_matched else "higher")
        parts.append(f"On all replayed labels at the matched alert rate the challenger's cost was {better}: "
                     f"{b.cost_matched:.1f} vs {a.cost_matched:.1f} per 1,000 transactions (at the thresholds they "
                     f"served with: {b.cost_own:.1f} vs {a.cost_own:.1f}).")
    if record.get("missing"):
        parts.append("Missing parts: " + "; ".join(record["missing"]) + ".")
    return " ".join(parts)


def latency_from_prometheus(api: PrometheusHTTP, start: float, end: float) -> dict[str, dict[str, float]]:
    """Router-to-arm latency percentiles (seconds) per arm and model version over the replay, from Prometheus."""
    window = f"{max(int(end - start), 1)}s"
    out: dict[str, dict[str, float]] = {}
    for q in QUANTILES:
        expr = (f"histogram_quantile({q}, sum by (arm, model_version, le) "
                f"(increase(kingmaker_router_upstream_duration_seconds_bucket[{window}])))")
        for series in api.query(expr, at=end):
            key = f"{series['metric'].get('arm', '?')} v{series['metric'].get('model_version', '?')}"
            value = float(series["value"][1])
            if math.isfinite(value):
                out.setdefault(key, {})[f"p{round(q * 100)}"] = value
    return out


# --- pictures -------------------------------------------------------------------------------------

def _png(fig: Figure) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _figure(width: float = 8.0, height: float = 3.2) -> tuple[Figure, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height))
    ax.grid(alpha=0.3)
    return fig, ax


def _iso(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def requests_plot(pred: pd.DataFrame, start: float, decided: float | None, label: str) -> str:
    fig, ax = _figure()
    if not pred.empty:
        t = pred["ts"].astype("int64").to_numpy() / 1e6 - start
        step = max(1.0, float(t.max()) / 60)
        bins = np.arange(0.0, float(t.max()) + step, step)
        groups = sorted(pred.groupby(["arm", "model_version", "served"]), key=lambda g: not g[0][2])  # shadow on top
        for (arm, version, served), part in groups:
            counts, edges = np.histogram(t[part.index.to_numpy()], bins=bins)
            ax.plot(edges[:-1], counts / step, label=f"{arm} v{version}" + ("" if served else " (shadow)"),
                    linestyle="-" if served else "--")
    if decided is not None:
        ax.axvline(decided - start, color="crimson", linewidth=2, label=label)
    ax.set_xlabel("seconds since the replay began")
    ax.set_ylabel("requests / s")
    ax.legend(fontsize=8, loc="lower left")
    return _png(fig)


def pr_plot(qualities: Sequence[ArmQuality], names: Mapping[str, str]) -> str:
    fig, ax = _figure(5.5, 4.0)
    for q in qualities:
        if len(q.recall):
            ax.plot(q.recall, q.precision, label=f"{names.get(q.version, q.version)}: AP {q.average_precision:.3f}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.legend(fontsize=8)
    return _png(fig)


def evidence_plot(trace: Sequence[Mapping[str, Any]], alpha: float) -> str | None:
    n, better, worse = evidence_series(trace)
    if not n:
        return None
    fig, ax = _figure()
    ax.plot(n, better, marker="o", label="wealth for 'challenger better' (1/p)")
    if any(math.isfinite(w) for w in worse):
        ax.plot(n, worse, marker=".", linestyle="--", label="wealth for 'challenger worse' (1/p)")
    ax.axhline(1.0 / alpha, color="crimson", label=f"1/alpha = {1 / alpha:g}: proven")
    ax.set_yscale("log")
    ax.set_xlabel("challenger's matured labelled transactions")
    ax.set_ylabel("evidence (log scale)")
    ax.legend(fontsize=8)
    return _png(fig)


def drift_plot(doc: Mapping[str, Any]) -> str | None:
    rows = [(f["name"], f["psi"]["score"]) for f in doc.get("features") or ()
            if f.get("psi") and f["psi"].get("score") is not None]
    if not rows:
        return None
    rows.sort(key=lambda r: r[1])
    fig, ax = _figure(7.0, max(3.0, 0.22 * len(rows)))
    ax.barh([r[0] for r in rows], [r[1] for r in rows], color="steelblue")
    for x, name in ((0.1, "moderate"), (0.25, "severe")):
        ax.axvline(x, color="gray" if name == "moderate" else "crimson", linestyle="--", label=f"PSI {x} ({name})")
    ax.set_xlabel("PSI, replayed window vs the champion's training reference")
    ax.legend(fontsize=8)
    return _png(fig)


# --- the page -------------------------------------------------------------------------------------

STYLE = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}
th:first-child,td:first-child{text-align:left}.verdict{font-size:1.2rem;padding:.75rem;border-radius:.4rem}
.PROMOTED{background:#e3f6e3}.HELD{background:#fff5d6}.ROLLED{background:#fde2e2}img{max-width:100%}
.note{color:#555;font-size:.9rem}"""


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "–" if not math.isfinite(v) else f"{v:,.4g}"
        return html.escape(str(v))

    return ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows) + "</table>")


def render(record: Mapping[str, Any], predictions_url: str, labels_url: str) -> str:
    from kingmaker import logs

    policy = record["policy"]["spec"]["policy"]
    review, missed = policy["cost"]["reviewCost"], policy["cost"]["missedFraudCost"]
    alert_rate, alpha = policy["alertRate"], policy["alpha"]
    candidates: dict[str, str] = record.get("candidates") or {}
    pred = logs.read_predictions(predictions_url)
    labels = logs.read_labels(labels_url)
    start = record["times"]["replay_began"]
    decided = record.get("decision")
    decided_at = _iso(decided.get("time")) if decided else None
    verdict = {"Promoted": "PROMOTED", "RolledBack": "ROLLED BACK"}.get((decided or {}).get("action", ""), "HELD")
    names = {v: f"v{v} {candidates.get(v, '')} ({role})".strip()
             for v, role in ((record["champion_version"], "champion"), (record["challenger_version"], "challenger"))}

    qualities: list[ArmQuality] = []
    if not pred.empty and not labels.empty:
        joined = pred.merge(labels[["request_id", "label"]], on="request_id", how="inner")
        for version, part in joined.groupby("model_version"):
            qualities.append(arm_quality(str(version), part["score"].to_numpy(), part["decision"].to_numpy(bool),
                                         part["label"].to_numpy(int), alert_rate=alert_rate, review_cost=review,
                                         missed_cost=missed))
    status = record.get("status") or {}
    last = status.get("lastEvaluation") or {}
    evidence = last.get("evidence") or {}
    drift_doc: dict[str, Any] = {}
    if record.get("drift_dir") and (Path(record["drift_dir"]) / "drift.json").exists():
        drift_doc = json.loads((Path(record["drift_dir"]) / "drift.json").read_text())
    req = record["requests"]
    wall = record.get("wall_seconds")

    out = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>kingmaker demo report</title>"
           f"<style>{STYLE}</style></head><body>",
           "<h1>kingmaker demo: champion vs challenger on replayed real traffic</h1>",
           f'<p class="verdict {verdict.split()[0]}"><b>{verdict}</b> — {html.escape(last.get("outcome", "no decision"))}'
           f" {html.escape(last.get('reason', ''))}: {html.escape(last.get('message', ''))}</p>",
           "<h2>What happened</h2>", f"<p>{html.escape(what_happened(record, qualities, candidates))}</p>",
           _table(["", "value"], [
               ("data", f"{record['data']['name']}: {record['data']['rows']:,} rows"),
               ("trained on (earliest by time)", f"{record['data']['train_rows']:,} rows, "
                                                 f"{record['data']['train_frauds']} frauds"),
               ("replayed (latest by time)", f"{record['data']['replay_rows']:,} rows, "
                                             f"{record['data']['replay_frauds']} frauds"),
               ("mode", record["mode"] + (f" (challenger weight {record['weight']})" if record["mode"] == "split" else "")),
               ("requests sent / failed", f"{req['sent']:,} / {req['failed']}"),
               ("labels sent", f"{req['labels_sent']:,}"),
               ("ended because", record["ended"]),
               ("wall time of the whole demo", f"{wall:.0f} s" if wall else "–")]),
           "<h2>The policy, fixed before measuring</h2>", f"<p>{html.escape(record['policy_why'])}</p>",
           f"<p>{html.escape(record['guardrails_why'])}</p>",
           _table(["policy field", "value"], [(k, json.dumps(v)) for k, v in policy.items()]),
           "<h2>Requests per arm over time</h2>",
           requests_plot(pred, start, decided_at, verdict.lower()),
           '<p class="note">Served answers per arm (solid) and shadow calls (dashed)'
           + ("; the red line marks the controller's decision, and traffic flows on through it.</p>" if decided_at
              else "; the controller did not decide to promote or roll back.</p>"),
           "<h2>Each arm on the replayed labels</h2>", pr_plot(qualities, names),
           _table(["model version", "labelled rows", "frauds", "PR-AUC (AP)", "alert rate at its threshold",
                   "recall at its threshold", "cost/1k at its threshold", f"recall at {alert_rate:.1%} alerts",
                   f"cost/1k at {alert_rate:.1%} alerts"],
                  [(names.get(q.version, q.version), q.rows, q.frauds, q.average_precision, q.alert_rate_own,
                    q.recall_at_own, q.cost_own, q.recall_matched, q.cost_matched) for q in qualities]),
           f'<p class="note">Cost per 1,000 transactions: {review:g} per alert, {missed:g} per missed fraud. "At its '
           f'threshold": the decision each arm served with. "At {alert_rate:.1%} alerts": each arm flags its top '
           f"{alert_rate:.1%} of scores on the whole replay, the comparison the controller makes (it learns each "
           "threshold from the arm's earlier scores only).</p>",
           "<h2>The decision and its evidence</h2>"]
    plot = evidence_plot(record.get("trace") or (), alpha)
    out.append(plot or "<p>No look had a test statistic (too few matured labels or frauds).</p>")
    out.append('<p class="note">Testing by betting: the wealth of a bettor against "the challenger is not better" '
               f"(1/p-value) after each look; it may be checked any number of times, and crossing 1/alpha = "
               f"{1 / alpha:g} proves the challenger better with at most {alpha:.0%} chance of a false promotion.</p>")
    out.append(_table(["evidence", "value"], [(k, json.dumps(v)) for k, v in evidence.items()
                                              if k not in ("guardrails",)]))
    out.append(_table(["guardrail", "reading"], [(k, json.dumps(v)) for k, v in
                                                 (evidence.get("guardrails") or {}).items()]))
    events = record.get("events") or ()
    out.append(_table(["time", "event", "message"], [(e.get("time", ""), e.get("reason", ""), e.get("message", ""))
                                                      for e in events[-12:]]))
    out.append("<h2>Drift</h2>")
    out.append(drift_plot(drift_doc) or "<p>No drift result.</p>")
    arms = drift_doc.get("arms") or {}
    scores = drift_doc.get("scores") or ()
    out.append(_table(["scores", "rows", "PSI", "severity"],
                      [*((f"{s.get('arm')} v{s.get('model_version')} vs its reference", s.get("n_current", ""),
                          (s.get("psi") or {}).get("score") or math.nan, s.get("severity", "")) for s in scores),
                       *([("champion vs challenger", arms.get("n_challenger", ""),
                           (arms.get("psi") or {}).get("score") or math.nan, arms.get("severity", ""))] if arms else [])]))
    out.append("<h2>Latency per arm (Router to arm, from Prometheus)</h2>")
    latency = record.get("latency")
    if latency:
        out.append(_table(["arm", *(f"p{round(q * 100)} ms" for q in QUANTILES)],
                          [(k, *(1000 * v.get(f"p{round(q * 100)}", math.nan) for q in QUANTILES))
                           for k, v in sorted(latency.items())]))
    else:
        out.append("<p>No Prometheus in this run.</p>")
    out.append('<p class="note">Each call carries a batch of rows. Generated by <code>kingmaker demo</code>.</p>'
               "</body></html>")
    return "\n".join(out)
