"""The ChampionChallenger CRD: a structural schema that accepts the example and rejects bad resources."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest

from k8s.decide import Outcome, Reason
from k8s.resource import CRD_PATH, GROUP, KIND, PLURAL, VERSION, Phase
from kingmaker.roles import Mode

from .conftest import CRD


def _version(crd: dict) -> dict:
    (version,) = crd["spec"]["versions"]
    return version


def _validator(crd: dict) -> jsonschema.Draft4Validator:
    # Kubernetes' openAPIV3Schema is JSON Schema draft 4 with boolean exclusiveMinimum/Maximum
    return jsonschema.Draft4Validator(_version(crd)["schema"]["openAPIV3Schema"])


def test_names_match_the_resource_module(crd: dict) -> None:
    assert CRD_PATH == CRD
    assert crd["metadata"]["name"] == f"{PLURAL}.{GROUP}"
    assert (crd["spec"]["group"], crd["spec"]["names"]["kind"], crd["spec"]["names"]["plural"]) == (GROUP, KIND, PLURAL)
    version = _version(crd)
    assert version["name"] == VERSION and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


def test_the_example_is_valid(crd: dict, example: dict) -> None:
    assert example["apiVersion"] == f"{GROUP}/{VERSION}" and example["kind"] == KIND
    errors = [e.message for e in _validator(crd).iter_errors(example)]
    assert errors == []


def _set(doc: dict, path: str, value: Any) -> dict:
    doc = copy.deepcopy(doc)
    *head, last = path.split(".")
    node = doc
    for key in head:
        node = node.setdefault(key, {})
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return doc


_DELETE = object()


@pytest.mark.parametrize(("path", "value"), [
    ("spec.modelName", _DELETE),
    ("spec.modelName", ""),
    ("spec.policy", _DELETE),
    ("spec.traffic.mode", "canary"),
    ("spec.traffic.challengerWeight", 1.5),
    ("spec.traffic.challengerWeight", "10%"),
    ("spec.policy.criterion", "roc-auc"),
    ("spec.policy.alertRate", 0),
    ("spec.policy.alpha", 0.9),
    ("spec.policy.minPositivesPerArm", 0),
    ("spec.policy.labelDelaySeconds", 3.5),
    ("spec.policy.cost.amountCap", -10),
    ("spec.policy.guardrails.maxErrorRate", 1.2),
    ("spec.policy.approval", "auto"),
    ("status.phase", "Done"),
    ("status.lastEvaluation.outcome", "PASS"),
])
def test_a_bad_resource_is_rejected(crd: dict, example: dict, path: str, value: Any) -> None:
    bad = _set(example, path, value)
    assert list(_validator(crd).iter_errors(bad)), f"the CRD accepts {path}={value!r}"


def test_a_full_status_is_valid(crd: dict, example: dict) -> None:
    doc = copy.deepcopy(example)
    doc["status"] = {
        "observedGeneration": 3, "phase": "Evaluating", "championVersion": "4", "challengerVersion": "5", "looks": 12,
        "analysesDone": 0, "planBetter": False,
        "lastEvaluation": {"time": "2026-11-26T12:00:00Z", "outcome": "HOLD", "reason": "Inconclusive",
                           "message": "challenger cost 41.2 vs champion 45.9 per 1k txns ...",
                           "evidence": {"p_better": 0.2, "interval": [-3.1, 0.4]}},
        "conditions": [{"type": "Ready", "status": "True", "reason": "Inconclusive",
                        "lastTransitionTime": "2026-11-26T12:00:00Z"}],
        "history": [{"time": "2026-11-20T08:00:00Z", "action": "Promoted", "championVersion": "4",
                     "previousChampionVersion": "3", "challengerVersion": "4", "reason": "ChallengerBetter"}],
    }
    assert [e.message for e in _validator(crd).iter_errors(doc)] == []


def test_status_and_traffic_enums_are_the_python_enums(crd: dict) -> None:
    schema = _version(crd)["schema"]["openAPIV3Schema"]["properties"]
    status = schema["status"]["properties"]
    assert status["phase"]["enum"] == [p.value for p in Phase]
    assert status["lastEvaluation"]["properties"]["outcome"]["enum"] == [o.value for o in Outcome]
    assert status["lastEvaluation"]["properties"]["reason"]["enum"] == [r.value for r in Reason]
    assert schema["spec"]["properties"]["traffic"]["properties"]["mode"]["enum"] == [m.value for m in Mode]


def _walk(node: dict, path: str = "") -> list[str]:
    """Paths in the schema that break Kubernetes' structural-schema rules we rely on."""
    bad = []
    if "type" not in node:
        bad.append(f"{path}: no type")
    if node.get("type") == "object" and "properties" not in node and not node.get("x-kubernetes-preserve-unknown-fields") \
            and path != ".metadata":
        bad.append(f"{path}: object without properties")
    if "properties" in node and "additionalProperties" in node:
        bad.append(f"{path}: properties and additionalProperties together")
    for key, child in node.get("properties", {}).items():
        bad.extend(_walk(child, f"{path}.{key}"))
    if "items" in node:
        bad.extend(_walk(node["items"], f"{path}[]"))
    return bad


def test_the_schema_is_structural(crd: dict) -> None:
    assert _walk(_version(crd)["schema"]["openAPIV3Schema"]) == []


def test_printer_columns_point_into_the_schema(crd: dict) -> None:
    version = _version(crd)
    root = version["schema"]["openAPIV3Schema"]
    for column in version["additionalPrinterColumns"]:
        node = root
        parts = column["jsonPath"].lstrip(".").split(".")
        if parts[0] == "metadata":
            continue
        for part in parts:
            node = node["properties"][part]
        expected = {"string": {"string"}, "number": {"number", "integer"}}[column["type"]]
        assert node["type"] in expected, column["name"]
