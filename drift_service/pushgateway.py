"""Export of a drift result as Prometheus gauges pushed to a Pushgateway (metric catalog names).

The push is a PUT of the whole group (``job`` + grouping key): a run replaces every series of the
previous run, so a feature that left the reference also leaves Prometheus. A failed run pushes
nothing, which leaves ``kingmaker_drift_last_success_timestamp_seconds`` at the last good run — the
staleness alert's signal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

from drift_service.analysis import DriftResult
from kingmaker import catalog
from kingmaker.errors import TemporaryError

DEFAULT_JOB = "kingmaker-drift"


def _gauge(registry: CollectorRegistry, name: str) -> Gauge:
    metric = catalog.create(catalog.CATALOG[name], registry)
    assert isinstance(metric, Gauge)
    return metric


def build_registry(result: DriftResult, *, champion_version: str | None, duration_seconds: float,
                   finished_at: float) -> CollectorRegistry:
    """A fresh registry holding the drift gauges of one run."""
    registry = CollectorRegistry()
    version = champion_version or "unknown"
    feature_psi = _gauge(registry, "kingmaker_drift_feature_psi")
    feature_d = _gauge(registry, "kingmaker_drift_feature_ks_statistic")
    feature_p = _gauge(registry, "kingmaker_drift_feature_ks_pvalue")
    feature_sev = _gauge(registry, "kingmaker_drift_feature_severity")
    for f in result.features:
        feature_sev.labels(f.name, version).set(f.severity.level)
        if f.psi is not None:
            feature_psi.labels(f.name, version).set(f.psi.score)
        if f.ks is not None:
            feature_d.labels(f.name, version).set(f.ks.d)
            feature_p.labels(f.name, version).set(f.ks.score)
    _gauge(registry, "kingmaker_drift_features_drifted").labels(version).set(len(result.drifted_features))
    _gauge(registry, "kingmaker_drift_severity").labels(version).set(result.severity.level)
    score_psi = _gauge(registry, "kingmaker_drift_score_psi")
    score_p = _gauge(registry, "kingmaker_drift_score_ks_pvalue")
    for s in result.scores:
        if s.psi is not None:
            score_psi.labels(s.arm.value, s.model_version or "unknown").set(s.psi.score)
        if s.ks is not None:
            score_p.labels(s.arm.value, s.model_version or "unknown").set(s.ks.score)
    arms_psi = _gauge(registry, "kingmaker_drift_arms_score_psi")
    if result.arms is not None and result.arms.psi is not None:
        arms_psi.labels(result.arms.champion_version or "unknown",
                        result.arms.challenger_version or "unknown").set(result.arms.psi.score)
    rows = _gauge(registry, "kingmaker_drift_window_rows")
    for arm, n in result.rows_by_arm.items():
        rows.labels(arm).set(n)
    _gauge(registry, "kingmaker_drift_duration_seconds").set(duration_seconds)
    _gauge(registry, "kingmaker_drift_last_success_timestamp_seconds").set(finished_at)
    return registry


def push(url: str, registry: CollectorRegistry, *, job: str = DEFAULT_JOB,
         grouping_key: Mapping[str, str] | None = None, timeout: float = 10.0) -> None:
    """PUT ``registry`` to the Pushgateway at ``url``; `TemporaryError` when it cannot be reached."""
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError("timeout must be a positive number of seconds")
    try:
        push_to_gateway(url, job=job, registry=registry, grouping_key=dict(grouping_key or {}), timeout=timeout)
    except OSError as exc:  # URLError and HTTPError are OSErrors
        raise TemporaryError(f"Pushgateway {url} did not take the metrics: {exc}") from exc
