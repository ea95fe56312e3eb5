"""The gauges a drift run pushes: catalog names, labels and the result's values."""

from __future__ import annotations

import socket

import numpy as np
import pandas as pd
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from drift_service.analysis import ArmReference, DriftResult, Policy, Window, analyse
from drift_service.pushgateway import build_registry, push
from kingmaker import catalog
from kingmaker.errors import TemporaryError
from kingmaker.roles import Arm

from .conftest import log_rows, make_reference, normal_frame


def _result() -> DriftResult:
    rng = np.random.default_rng(0)
    x = normal_frame(4000, features=3, seed=1)
    ref = make_reference(x)
    live = normal_frame(3000, features=3, seed=2, shift={0: 1.0})
    frame = pd.concat([log_rows(live.iloc[:2000], version="5", id_prefix="a"),
                       log_rows(live.iloc[2000:], arm="challenger", version="6", id_prefix="b",
                                scores=rng.beta(1, 20, 1000))], ignore_index=True)
    arms = [ArmReference(Arm.CHAMPION, "5", ref), ArmReference(Arm.CHALLENGER, "6", None)]
    return analyse(Window(frame, None, None, "m"), ref, arms, Policy(min_rows=500))


def _samples(result: DriftResult) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(build_registry(result, champion_version="5", duration_seconds=1.5,
                                          finished_at=1_700_000_000.0)).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_registry_holds_the_result_under_catalog_names() -> None:
    result = _result()
    samples = _samples(result)
    names = {name for name, _ in samples}
    assert names <= {spec.name for spec in catalog.DRIFT}
    assert names == {spec.name for spec in catalog.DRIFT}  # every drift metric is exported
    x0 = result.features[0]
    assert x0.psi is not None and x0.ks is not None
    key = (("feature", "x0"), ("model_version", "5"))
    assert samples[("kingmaker_drift_feature_psi", key)] == pytest.approx(x0.psi.score, abs=1e-12)
    assert samples[("kingmaker_drift_feature_ks_pvalue", key)] == pytest.approx(x0.ks.score, abs=1e-15)
    assert samples[("kingmaker_drift_feature_ks_statistic", key)] == pytest.approx(x0.ks.d, abs=1e-12)
    assert samples[("kingmaker_drift_feature_severity", key)] == 2
    assert samples[("kingmaker_drift_severity", (("model_version", "5"),))] == 2
    assert samples[("kingmaker_drift_features_drifted", (("model_version", "5"),))] == len(result.drifted_features)
    assert samples[("kingmaker_drift_window_rows", (("arm", "champion"),))] == 2000
    assert samples[("kingmaker_drift_window_rows", (("arm", "challenger"),))] == 1000
    assert result.arms is not None and result.arms.psi is not None
    assert samples[("kingmaker_drift_arms_score_psi", (("challenger_version", "6"), ("champion_version", "5")))] \
        == pytest.approx(result.arms.psi.score, abs=1e-12)
    assert ("kingmaker_drift_score_psi", (("arm", "champion"), ("model_version", "5"))) in samples
    assert ("kingmaker_drift_score_psi", (("arm", "challenger"), ("model_version", "6"))) not in samples
    assert samples[("kingmaker_drift_last_success_timestamp_seconds", ())] == 1_700_000_000.0
    assert samples[("kingmaker_drift_duration_seconds", ())] == 1.5


def test_catalog_drift_names_follow_the_conventions() -> None:
    for spec in catalog.DRIFT:
        assert spec.name.startswith("kingmaker_drift_")
        assert spec.kind is catalog.Kind.GAUGE
        assert catalog.CATALOG[spec.name] is spec


def test_push_to_an_unreachable_gateway_is_a_temporary_error() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TemporaryError, match=f"Pushgateway http://127.0.0.1:{port} did not take the metrics"):
        push(f"http://127.0.0.1:{port}", build_registry(_result(), champion_version="5", duration_seconds=1.0,
                                                        finished_at=0.0), timeout=2.0)
