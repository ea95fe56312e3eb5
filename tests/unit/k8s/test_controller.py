"""The reconcile loop's scheduling in Kubernetes mode reads the interval through the one policy parser."""

from __future__ import annotations

from typing import Any

import pytest

from k8s.controller import _interval


def resource(policy: Any = None, model: str | None = "fraud-detector") -> dict[str, Any]:
    spec: dict[str, Any] = {} if model is None else {"modelName": model}
    if policy is not None:
        spec["policy"] = policy
    return {"metadata": {"name": "r", "generation": 1}, "spec": spec}


@pytest.mark.parametrize(("doc", "seconds"), [
    (resource({"evaluationIntervalSeconds": 20}), 20.0),
    (resource(), 300.0),  # the CRD default, from parse_policy
    (resource({"evaluationIntervalSeconds": 5}), 42.0),  # parse_policy: must be >= 10
    (resource({"evaluationIntervalSeconds": 20.5}), 42.0),  # must be an integer
    (resource({"evaluationIntervalSeconds": True}), 42.0),
    (resource({"evaluationIntervalSeconds": 20, "alpha": 2}), 42.0),  # any invalid field: the spec is invalid
    (resource({"evaluationIntervalSeconds": 20}, model=None), 42.0),
    ({"metadata": {"name": "r"}, "spec": "not a mapping"}, 42.0),
])
def test_interval_is_the_validated_policys_or_the_default(doc: dict[str, Any], seconds: float) -> None:
    assert _interval(doc, 42.0) == seconds
