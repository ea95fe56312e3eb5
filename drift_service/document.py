"""A `DriftResult` as the ``drift.json`` document (`kingmaker.drift_result`), and as flat MLflow metrics.

Pure: the analysis' dataclasses in, the shared format's dataclasses (or a dict of floats) out. The format
itself, its version, writer and reader live in `kingmaker.drift_result`, which the controller reads too.
"""

from __future__ import annotations

import math
from dataclasses import asdict

from drift_service.analysis import ArmComparison, DriftResult, FeatureDrift, ScoreDrift
from drift_service.stats import KsResult, PsiResult
from kingmaker import drift_result as fmt
from kingmaker.drift_result import Context, DriftDocument


def _psi(p: PsiResult | None) -> fmt.Psi | None:
    if p is None:
        return None
    return fmt.Psi(statistic=p.statistic.value, score=p.score if math.isfinite(p.score) else None,
                   threshold=p.threshold, severe_threshold=p.severe_threshold, severity=p.severity.value,
                   drifted=p.drifted, n_reference=p.n_reference, n_current=p.n_current, bins=tuple(p.bins),
                   reference_share=tuple(p.reference_share), current_share=tuple(p.current_share))


def _ks(k: KsResult | None) -> fmt.Ks | None:
    if k is None:
        return None
    return fmt.Ks(d=k.d, p_value=k.p_value, p_adjusted=k.p_adjusted, threshold=k.threshold, drifted=k.drifted,
                  n_reference=k.n_reference, n_current=k.n_current)


def _feature(f: FeatureDrift) -> fmt.Feature:
    return fmt.Feature(name=f.name, kind=f.kind.value, severity=f.severity.value, drifted=f.drifted,
                       n_reference=f.n_reference, n_current=f.n_current, n_missing=f.n_missing,
                       psi=_psi(f.psi), ks=_ks(f.ks))


def _score(s: ScoreDrift) -> fmt.Score:
    return fmt.Score(arm=s.arm.value, model_version=s.model_version, severity=s.severity.value,
                     n_reference=s.n_reference, n_current=s.n_current, psi=_psi(s.psi), ks=_ks(s.ks))


def _arms(a: ArmComparison | None) -> fmt.Arms | None:
    if a is None:
        return None
    return fmt.Arms(champion_version=a.champion_version, challenger_version=a.challenger_version,
                    severity=a.severity.value, n_champion=a.n_champion, n_challenger=a.n_challenger,
                    psi=_psi(a.psi), ks=_ks(a.ks))


def to_document(result: DriftResult, context: Context) -> DriftDocument:
    policy = {**asdict(result.policy), "correction": result.policy.correction.value}
    return DriftDocument(context=context, severity=result.severity.value, rows=result.rows,
                         rows_by_arm=dict(result.rows_by_arm), drifted_features=result.drifted_features,
                         policy=policy, features=tuple(_feature(f) for f in result.features),
                         scores=tuple(_score(s) for s in result.scores), arms=_arms(result.arms))


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
