"""The self-contained HTML drift report: one file, PNG charts embedded as base64, no external assets.

Sections: the verdict and its context; a PSI bar chart of all features with the thresholds; the
score distributions of each arm against its reference and of the two arms against each other; a
table of every statistic; per-feature reference vs. current histograms (worst first).

Charts are drawn with matplotlib's object API (`Figure` + Agg), never pyplot, so no global state
is touched.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from drift_service.analysis import DriftResult, FeatureDrift, FeatureKind, Histogram
from drift_service.stats import KsResult, PsiResult, Severity
from kingmaker.drift_result import Context

COLORS = {Severity.NONE: "#2e7d32", Severity.MODERATE: "#ef6c00", Severity.SEVERE: "#c62828",
          Severity.INSUFFICIENT_DATA: "#757575"}
REFERENCE_COLOR, CURRENT_COLOR, CHALLENGER_COLOR = "#90a4ae", "#1565c0", "#8e24aa"

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
     color:#212121;padding:0 1em}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.badge{display:inline-block;padding:.15em .6em;border-radius:.4em;color:#fff;font-weight:600}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}
td,th{border-bottom:1px solid #eee;padding:.25em .7em;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:.8em}
.card{border:1px solid #eee;border-radius:.4em;padding:.4em}
.muted{color:#757575;font-size:.85em}
img{max-width:100%}
"""


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return f'<img alt="chart" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode("ascii")}">'


def _badge(severity: Severity) -> str:
    label = severity.value.replace("_", " ")
    return f'<span class="badge" style="background:{COLORS[severity]}">{html.escape(label)}</span>'


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "–"
    return f"{x:.2e}" if x != 0 and abs(x) < 10 ** -digits else f"{x:.{digits}f}"


def _psi_chart(features: Sequence[FeatureDrift], moderate: float, severe: float) -> str:
    rows = sorted((f for f in features if f.psi is not None), key=lambda f: f.psi.score if f.psi else 0.0)
    if not rows:
        return '<p class="muted">No feature had enough data for PSI.</p>'
    fig = Figure(figsize=(8, max(2.0, 0.28 * len(rows) + 1)), dpi=90)
    ax = fig.add_subplot()
    scores = [f.psi.score if f.psi else 0.0 for f in rows]
    ax.barh([f.name for f in rows], scores, color=[COLORS[f.severity] for f in rows])
    ax.axvline(moderate, color=COLORS[Severity.MODERATE], ls="--", lw=1, label=f"moderate ≥ {moderate:g}")
    ax.axvline(severe, color=COLORS[Severity.SEVERE], ls="--", lw=1, label=f"severe ≥ {severe:g}")
    ax.set_xlabel("PSI (reference-quantile bins)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(0, max(max(scores), severe) * 1.1)
    return _png(fig)


def _hist_axes(ax: Axes, hist: Histogram, labels: tuple[str, str], colors: tuple[str, str]) -> None:
    edges = np.asarray(hist.edges)
    widths = np.diff(edges)
    for shares, label, color, alpha in ((hist.reference, labels[0], colors[0], 0.55),
                                        (hist.current, labels[1], colors[1], 0.45)):
        ax.bar(edges[:-1], np.asarray(shares) / widths, width=widths, align="edge",
               alpha=alpha, color=color, label=label, edgecolor="none")
    ax.set_ylabel("density", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)


def _feature_chart(f: FeatureDrift) -> str:
    fig = Figure(figsize=(4.2, 2.4), dpi=80)
    ax = fig.add_subplot()
    psi_text = f"PSI {f.psi.score:.3f}" if f.psi is not None else "insufficient data"
    ax.set_title(f"{f.name} — {psi_text}", fontsize=9, color=COLORS[f.severity])
    if f.kind is FeatureKind.NUMERIC and f.histogram is not None:
        _hist_axes(ax, f.histogram, ("reference", "current"), (REFERENCE_COLOR, CURRENT_COLOR))
    elif f.psi is not None:
        x = np.arange(len(f.psi.bins))
        ax.bar(x - 0.2, f.psi.reference_share, 0.4, color=REFERENCE_COLOR, label="reference")
        ax.bar(x + 0.2, f.psi.current_share, 0.4, color=CURRENT_COLOR, label="current")
        ax.set_xticks(x, f.psi.bins, rotation=45, fontsize=7)
        ax.set_ylabel("share", fontsize=8)
        ax.legend(fontsize=7)
    return _png(fig)


def _score_charts(result: DriftResult) -> str:
    panels = [(f"{s.arm.value} (v{s.model_version or '?'}) vs its reference", s.histogram,
               ("reference", "window"), (REFERENCE_COLOR, CURRENT_COLOR), s.severity)
              for s in result.scores if s.histogram is not None]
    if result.arms is not None and result.arms.histogram is not None:
        panels.append(("champion vs challenger (same window)", result.arms.histogram,
                       ("champion", "challenger"), (CURRENT_COLOR, CHALLENGER_COLOR), result.arms.severity))
    if not panels:
        return '<p class="muted">No arm had enough scored rows to draw.</p>'
    fig = Figure(figsize=(4.2 * len(panels), 2.8), dpi=85)
    for i, (title, hist, labels, colors, severity) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, len(panels), i)
        ax.set_title(title, fontsize=9, color=COLORS[severity])
        _hist_axes(ax, hist, labels, colors)
        ax.set_xlabel("score", fontsize=8)
    return _png(fig)


def _stat_cells(p: PsiResult | None, k: KsResult | None) -> str:
    return (f'<td class="num">{_fmt(p.score if p else None)}</td><td class="num">{_fmt(k.d if k else None)}</td>'
            f'<td class="num">{_fmt(k.p_value if k else None)}</td>'
            f'<td class="num">{_fmt(k.p_adjusted if k else None)}</td>')


def _feature_table(features: Sequence[FeatureDrift]) -> str:
    head = ("<tr><th>feature</th><th>kind</th><th>severity</th><th>PSI</th><th>KS D</th><th>p</th>"
            "<th>p adjusted</th><th>n current</th><th>missing</th></tr>")
    rows = [f"<tr><td>{html.escape(f.name)}</td><td>{f.kind.value}</td><td>{_badge(f.severity)}</td>"
            f"{_stat_cells(f.psi, f.ks)}<td class=\"num\">{f.n_current}</td><td class=\"num\">{f.n_missing}</td></tr>"
            for f in _worst_first(features)]
    return f"<table>{head}{''.join(rows)}</table>"


def _score_table(result: DriftResult) -> str:
    head = ("<tr><th>comparison</th><th>severity</th><th>PSI</th><th>KS D</th><th>p</th><th>p adjusted</th>"
            "<th>n</th></tr>")
    rows = [f"<tr><td>{s.arm.value} v{html.escape(s.model_version or '?')} vs reference</td>"
            f"<td>{_badge(s.severity)}</td>{_stat_cells(s.psi, s.ks)}<td class=\"num\">{s.n_current}</td></tr>"
            for s in result.scores]
    a = result.arms
    if a is not None:
        rows.append(f"<tr><td>champion v{html.escape(a.champion_version or '?')} vs challenger "
                    f"v{html.escape(a.challenger_version or '?')}</td><td>{_badge(a.severity)}</td>"
                    f"{_stat_cells(a.psi, a.ks)}<td class=\"num\">{a.n_champion} / {a.n_challenger}</td></tr>")
    return f"<table>{head}{''.join(rows)}</table>" if rows else '<p class="muted">No arm scores analysed.</p>'


def _worst_first(features: Sequence[FeatureDrift]) -> list[FeatureDrift]:
    return sorted(features, key=lambda f: (-f.severity.level, -(f.psi.score if f.psi else -1.0), f.name))


def render(result: DriftResult, context: Context) -> str:
    """The whole report as one HTML string."""
    pol = result.policy
    e = html.escape
    window = (f"{context.since:%Y-%m-%d %H:%M} – {context.until:%Y-%m-%d %H:%M} UTC"
              if context.since and context.until else "–")
    facts = [
        ("model", f"{context.model_name}: champion v{context.champion_version or '?'}"
                  + (f", challenger v{context.challenger_version}" if context.challenger_version else "")),
        ("reference", context.reference_source), ("prediction log", context.predictions_url),
        ("window", window),
        ("rows", f"{result.rows} requests; " + ", ".join(f"{k}: {v}" for k, v in sorted(result.rows_by_arm.items()))),
        ("policy", f"PSI moderate ≥ {pol.psi_moderate:g}, severe ≥ {pol.psi_severe:g}; KS α = {pol.alpha:g} "
                   f"({pol.correction.value} across features); minimum {pol.min_rows} rows; "
                   f"empty-bin ε = {pol.epsilon:g}"),
        ("created", f"{context.created:%Y-%m-%d %H:%M:%S} UTC"),
    ]
    fact_rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in facts)
    drifted = ", ".join(result.drifted_features) or "none"
    cards = "".join(f'<div class="card">{_feature_chart(f)}</div>' for f in _worst_first(result.features)
                    if f.psi is not None)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Drift report — {e(context.model_name)} v{e(context.champion_version or '?')}</title>
<style>{CSS}</style></head><body>
<h1>Drift report — {e(context.model_name)}</h1>
<p>Overall: {_badge(result.severity)} &nbsp; drifted features: {e(drifted)}</p>
<table>{fact_rows}</table>
<h2>Feature drift (PSI)</h2>
{_psi_chart(result.features, pol.psi_moderate, pol.psi_severe)}
<h2>Score distributions per arm</h2>
{_score_charts(result)}
{_score_table(result)}
<h2>All features</h2>
<p class="muted">Severe: PSI ≥ {pol.psi_severe:g}, or PSI ≥ {pol.psi_moderate:g} confirmed by a significant KS
test. Moderate: PSI ≥ {pol.psi_moderate:g} or a significant KS test alone.</p>
{_feature_table(result.features)}
<h2>Reference vs. current, per feature</h2>
<div class="grid">{cards}</div>
</body></html>
"""
