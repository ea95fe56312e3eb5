"""The policy: parsed from the CRD's spec.policy, one readable line on a bad value, names as in the CRD."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import jsonschema
import pytest

from k8s.policy import Approval, CostMatrix, Criterion, Guardrails, Policy, crd_key, parse_policy
from kingmaker.errors import PermanentError


def test_the_example_resource_parses_into_a_policy(example: dict) -> None:
    p = parse_policy(example["spec"]["policy"])
    assert p == Policy(
        criterion=Criterion.EXPECTED_COST, alert_rate=0.003,
        cost=CostMatrix(review_cost=5.0, missed_fraud_cost=100.0, amount_feature="Amount", amount_cap=500.0),
        label_delay_seconds=604800, min_labelled_per_arm=1000, min_positives_per_arm=20, alpha=0.05,
        guardrails=Guardrails(0.01, 0.25, 0.25), approval=Approval.MANUAL, evaluation_interval_seconds=300,
    )
    assert p.cost.bound == 500.0


def test_an_empty_policy_is_the_defaults() -> None:
    assert parse_policy({}) == Policy() == parse_policy(None)
    assert Policy().cost.bound == 100.0
    assert Policy().planned_labels is None  # unplanned: the even mixture


def test_a_planned_horizon_is_read() -> None:
    assert parse_policy({"plannedLabels": 20_000}).planned_labels == 20_000
    assert parse_policy({"plannedLabels": None}).planned_labels is None


@pytest.mark.parametrize(("name", "key"), [("alert_rate", "alertRate"), ("max_p99_latency_seconds", "maxP99LatencySeconds"),
                                           ("fpr", "fpr"), ("min_labelled_per_arm", "minLabelledPerArm")])
def test_crd_key(name: str, key: str) -> None:
    assert crd_key(name) == key


BAD: list[tuple[dict[str, Any], str]] = [
    ({"alertRate": 1.5}, "policy.alertRate: must be < 1, got 1.5"),
    ({"alertRate": 0}, "policy.alertRate: must be > 0, got 0"),
    ({"alertRate": "2%"}, "policy.alertRate: must be a finite number, got '2%'"),
    ({"criterion": "auc"}, "policy.criterion: must be one of expected-cost, pr-auc, recall-at-fpr, got 'auc'"),
    ({"approval": "yes"}, "policy.approval: must be one of automatic, manual, got 'yes'"),
    ({"alpha": 0.7}, "policy.alpha: must be <= 0.5, got 0.7"),
    ({"minPositivesPerArm": 0}, "policy.minPositivesPerArm: must be >= 1, got 0"),
    ({"minLabelledPerArm": 10.5}, "policy.minLabelledPerArm: must be an integer, got 10.5"),
    ({"labelDelaySeconds": True}, "policy.labelDelaySeconds: must be an integer, got True"),
    ({"evaluationIntervalSeconds": 1}, "policy.evaluationIntervalSeconds: must be >= 10, got 1"),
    ({"plannedAnalyses": 0}, "policy.plannedAnalyses: must be >= 1, got 0"),
    ({"plannedLabels": 50}, "policy.plannedLabels: must be >= 100, got 50"),
    ({"plannedLabels": "20k"}, "policy.plannedLabels: must be an integer, got '20k'"),
    ({"cost": {"missedFraudCost": 0}}, "policy.cost.missedFraudCost: must be > 0, got 0"),
    ({"cost": {"reviewCost": -1}}, "policy.cost.reviewCost: must be >= 0, got -1"),
    ({"cost": {"amountFeature": "Amount"}},
     "policy.cost.amountCap: is required with amountFeature (the test needs a bounded cost)"),
    ({"guardrails": {"maxErrorRate": 2}}, "policy.guardrails.maxErrorRate: must be <= 1, got 2"),
    ({"guardrails": {"maxScorePsi": 0}}, "policy.guardrails.maxScorePsi: must be > 0, got 0"),
    ({"guardrails": []}, "policy.guardrails: must be a mapping, got list"),
]


@pytest.mark.parametrize(("spec", "message"), BAD)
def test_a_bad_value_is_one_readable_line(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(PermanentError) as info:
        parse_policy(spec)
    assert str(info.value) == message


def test_a_misspelt_key_gets_a_suggestion() -> None:
    with pytest.raises(PermanentError, match=r"^policy.alertrate: unknown field \(did you mean alertRate\?\)$"):
        parse_policy({"alertrate": 0.1})
    with pytest.raises(PermanentError, match=r"^policy.cost.zzz: unknown field \(known: amountCap, amountFeature, "):
        parse_policy({"cost": {"zzz": 1}})


# --- the CRD agrees ------------------------------------------------------------------------------------

def _policy_schema(crd: dict) -> dict:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["policy"]


@pytest.mark.parametrize(("cls", "path"), [(Policy, ()), (CostMatrix, ("cost",)), (Guardrails, ("guardrails",))])
def test_policy_field_names_are_the_crd_keys(crd: dict, cls: type, path: tuple[str, ...]) -> None:
    schema = _policy_schema(crd)
    for key in path:
        schema = schema["properties"][key]
    assert sorted(schema["properties"]) == sorted(crd_key(f.name) for f in fields(cls))


@pytest.mark.parametrize(("cls", "path"), [(Policy, ()), (CostMatrix, ("cost",)), (Guardrails, ("guardrails",))])
def test_crd_defaults_are_the_policy_defaults(crd: dict, cls: type, path: tuple[str, ...]) -> None:
    schema = _policy_schema(crd)
    for key in path:
        schema = schema["properties"][key]
    default = cls()
    for f in fields(cls):
        prop = schema["properties"][crd_key(f.name)]
        value = getattr(default, f.name)
        if prop.get("type") == "object":
            continue
        if value is None:
            assert "default" not in prop, f.name
        else:
            assert prop["default"] == value, f.name


def test_crd_enums_are_the_policy_enums(crd: dict) -> None:
    schema = _policy_schema(crd)["properties"]
    assert schema["criterion"]["enum"] == [c.value for c in Criterion]
    assert schema["approval"]["enum"] == [a.value for a in Approval]


#: Cross-field rules (amountCap required with amountFeature) are the controller's alone: no CEL rule yet.
SINGLE_FIELD = [(spec, message) for spec, message in BAD if "is required with" not in message]


@pytest.mark.parametrize(("spec", "message"), SINGLE_FIELD)
def test_the_crd_schema_rejects_what_the_parser_rejects(crd: dict, spec: dict[str, Any], message: str) -> None:
    """Bad values are refused at `kubectl apply` already, not only by the controller."""
    validator = jsonschema.Draft4Validator(_policy_schema(crd))
    assert list(validator.iter_errors(spec)), f"the CRD accepts {spec}"
