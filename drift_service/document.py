"""The JSON document of one drift run (``drift.json``): the result plus where it came from.

Pure: dataclasses in, plain JSON-able dicts out. The layout (``format`` 1)::

    {"format": 1, "context": {...}, "severity": "none", "rows": 1234, "rows_by_arm": {...},
     "drifted_features": [...], "policy": {...},
     "features": [{"name", "kind", "severity", "drifted", "n_reference", "n_current", "n_missing",
                   "psi": {"score", "threshold", "severe_threshold", "severity", "drifted", "bins",
                           "reference_share", "current_share"} | null,
                   "ks": {"d", "p_value", "p_adjusted", "threshold", "drifted"} | null}],
     "scores": [{"arm", "model_version", "severity", "n_reference", "n_current", "psi", "ks"}],
     "arms": {"champion_version", "challenger_version", "severity", "n_champion", "n_challenger",
              "psi", "ks"} | null}
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from drift_service.analysis import ArmComparison, DriftResult, FeatureDrift, ScoreDrift
from drift_service.stats import KsResult, PsiResult

FORMAT = 1


@dataclass(frozen=True)
class Context:
    """Where a drift result came from."""

    model_name: str
    champion_version: str | None
    challenger_version: str | None
    reference_source: str  # e.g. "models:/fraud-detector@champion (version 3, run abc)" or a folder
    predictions_url: str
    since: datetime | None
    until: datetime | None
    created: datetime


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def psi_dict(p: PsiResult | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {"statistic": p.statistic.value, "score": _num(p.score), "threshold": p.threshold,
            "severe_threshold": p.severe_threshold, "severity": p.severity.value, "drifted": p.drifted,
            "n_reference": p.n_reference, "n_current": p.n_current, "bins": list(p.bins),
            "reference_share": list(p.reference_share), "current_share": list(p.current_share)}


def ks_dict(k: KsResult | None) -> dict[str, Any] | None:
    if k is None:
        return None
    return {"d": k.d, "p_value": k.p_value, "p_adjusted": k.p_adjusted, "threshold": k.threshold,
            "drifted": k.drifted, "n_reference": k.n_reference, "n_current": k.n_current}


def _feature(f: FeatureDrift) -> dict[str, Any]:
    return {"name": f.name, "kind": f.kind.value, "severity": f.severity.value, "drifted": f.drifted,
            "n_reference": f.n_reference, "n_current": f.n_current, "n_missing": f.n_missing,
            "psi": psi_dict(f.psi), "ks": ks_dict(f.ks)}


def _score(s: ScoreDrift) -> dict[str, Any]:
    return {"arm": s.arm.value, "model_version": s.model_version, "severity": s.severity.value,
            "n_reference": s.n_reference, "n_current": s.n_current, "psi": psi_dict(s.psi), "ks": ks_dict(s.ks)}


def _arms(a: ArmComparison | None) -> dict[str, Any] | None:
    if a is None:
        return None
    return {"champion_version": a.champion_version, "challenger_version": a.challenger_version,
            "severity": a.severity.value, "n_champion": a.n_champion, "n_challenger": a.n_challenger,
            "psi": psi_dict(a.psi), "ks": ks_dict(a.ks)}


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def to_document(result: DriftResult, context: Context) -> dict[str, Any]:
    ctx = asdict(context)
    for key in ("since", "until", "created"):
        ctx[key] = _iso(getattr(context, key))
    policy = asdict(result.policy)
    policy["correction"] = result.policy.correction.value
    return {"format": FORMAT, "context": ctx, "severity": result.severity.value, "rows": result.rows,
            "rows_by_arm": dict(result.rows_by_arm), "drifted_features": list(result.drifted_features),
            "policy": policy, "features": [_feature(f) for f in result.features],
            "scores": [_score(s) for s in result.scores], "arms": _arms(result.arms)}


def mlflow_metrics(result: DriftResult) -> dict[str, float]:
    """Flat metrics for the MLflow run (keys safe for MLflow: letters, digits, ``_-./ ``)."""
    out: dict[str, float] = {"severity_level": float(result.severity.level), "rows": float(result.rows),
                             "features_drifted": float(len(result.drifted_features))}
    for f in result.features:
        key = _safe(f.name)
        out[f"feature_severity_level/{key}"] = float(f.severity.level)
        if f.psi is not None and math.isfinite(f.psi.score):
            out[f"psi/{key}"] = f.psi.score
        if f.ks is not None:
            out[f"ks_pvalue/{key}"] = f.ks.score
    for s in result.scores:
        if s.psi is not None:
            out[f"score_psi/{s.arm.value}"] = s.psi.score
    if result.arms is not None and result.arms.psi is not None:
        out["arms_score_psi"] = result.arms.psi.score
    return out


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "_-. " else "_" for ch in name)
