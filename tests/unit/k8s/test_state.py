"""The resource's spec and status: parsing, pure transitions, and every status valid against the CRD schema."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import yaml

from k8s.decide import ArmRows, Decision, DriftSummary, GuardrailReadings, Observations, Outcome, State, decide
from k8s.policy import Approval, parse_policy
from k8s.resource import Phase
from k8s.state import (
    Arms,
    ConditionType,
    Pair,
    Status,
    Traffic,
    desired_serving,
    evaluated,
    failed,
    parse_spec,
    promoted,
    rolled_back,
    set_condition,
    settled,
)
from kingmaker.errors import PermanentError
from kingmaker.roles import Mode

from .conftest import spec

ROOT = Path(__file__).resolve().parents[3]
CRD = yaml.safe_load((ROOT / "k8s" / "crd" / "championchallenger.yaml").read_text())
EXAMPLE = yaml.safe_load((ROOT / "k8s" / "examples" / "championchallenger.yaml").read_text())
STATUS_SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]


def assert_valid(status: Status) -> None:
    errors = [e.message for e in jsonschema.Draft4Validator(STATUS_SCHEMA).iter_errors(status.to_dict())]
    assert errors == []


def decision(kind: str, *, approval: str = "automatic") -> Decision:
    """A real decision from decide() on literal rows: 'better', 'worse', 'hold' or 'error'."""
    n = 4000
    rng = np.random.default_rng(0)
    label = (np.arange(n) % 50 == 49).astype(float)
    good = np.where(label == 1, 0.99, rng.uniform(0, 0.5, n))
    bad = np.where(label == 1, 0.001, rng.uniform(0, 0.5, n))
    a_score, b_score = {"better": (bad, good), "worse": (good, bad), "hold": (good, good), "error": (good, good)}[kind]
    ts = np.arange(n, dtype=float)
    a = ArmRows.of("1", ts=ts, score=a_score, label=label)
    b = ArmRows.of("1" if kind == "error" else "2", ts=ts, score=b_score, label=label)
    obs = Observations(now=float(n), mode=Mode.SHADOW, challenger_weight=0.1, champion=a, challenger=b,
                       guardrails=GuardrailReadings(0.001, 0.05), drift=DriftSummary(0.01))
    policy = parse_policy({"labelDelaySeconds": 0, "approval": approval})
    return decide(obs, policy, State("1", b.version, looks=3))


def test_the_example_resource_parses() -> None:
    s = parse_spec(EXAMPLE)
    assert (s.name, s.model_name, s.champion_alias, s.challenger_alias) == ("fraud-detector", "fraud-detector",
                                                                             "champion", "challenger")
    assert s.traffic == Traffic(0.1, Mode.SPLIT, "card_id")
    assert s.policy.approval is Approval.MANUAL and s.policy.cost.amount_feature == "Amount"


@pytest.mark.parametrize(("path", "value", "message"), [
    ("modelName", None, "spec.modelName: required"),
    ("traffic.challengerWeight", 1.5, "challengerWeight"),
    ("traffic.mode", "canary", "spec.traffic.mode"),
    ("policy.alpha", 0.9, "spec.policy.alpha"),
    ("aliases.challenger", "champion", "same alias"),
])
def test_bad_specs_are_permanent_errors(path: str, value: Any, message: str) -> None:
    doc = copy.deepcopy(EXAMPLE)
    node = doc["spec"]
    *head, last = path.split(".")
    for key in head:
        node = node.setdefault(key, {})
    if value is None:
        del node[last]
    else:
        node[last] = value
    with pytest.raises(PermanentError, match=message):
        parse_spec(doc)


def test_a_promote_decision_records_the_whole_intent_first() -> None:
    d = decision("better")
    assert d.outcome is Outcome.PROMOTE and d.act
    status = evaluated(Status(), d, now=1000.0, generation=4)
    assert status.phase is Phase.PROMOTING
    assert (status.champion_version, status.challenger_version) == ("1", "2")  # from -> to
    assert status.looks == 4 and status.observed_generation == 4
    assert status.last_evaluation is not None and status.last_evaluation.reason.value == "ChallengerBetter"
    assert status.last_evaluation.evidence["tested"] > 0
    ready = next(c for c in status.conditions if c["type"] == ConditionType.READY)
    assert ready["status"] == "False" and ready["reason"] == "PromotionInProgress"
    assert_valid(status)
    # a Status survives the round trip through its dict (the local file / the API server)
    assert Status.from_dict(status.to_dict()) == status

    done = promoted(status, now=2000.0)
    assert done.phase is Phase.PROMOTED and (done.champion_version, done.challenger_version) == ("2", None)
    assert done.looks == 0
    (entry,) = done.history
    assert entry["action"] == "Promoted" and entry["championVersion"] == "2"
    assert entry["previousChampionVersion"] == "1" and entry["time"] == status.last_evaluation.time
    assert promoted(status, now=3000.0).history == done.history  # completing twice adds no second entry
    assert_valid(done)


def test_rollback_and_hold_and_error_phases() -> None:
    back = evaluated(Status(), decision("worse"), now=1.0, generation=None)
    assert back.phase is Phase.ROLLING_BACK
    done = rolled_back(back, now=2.0)
    assert done.phase is Phase.ROLLED_BACK and done.history[-1]["action"] == "RolledBack"
    assert (done.champion_version, done.challenger_version) == ("1", "2")
    assert_valid(done)
    hold = evaluated(Status(), decision("hold"), now=1.0, generation=None)
    assert hold.phase is Phase.EVALUATING and hold.history == ()
    error = evaluated(Status(), decision("error"), now=1.0, generation=None)
    assert error.phase is Phase.ERROR
    assert next(c for c in error.conditions if c["type"] == ConditionType.EVALUATED)["status"] == "False"
    for s in (hold, error):
        assert_valid(s)
    with pytest.raises(PermanentError):
        promoted(hold, now=3.0)
    assert_valid(failed(hold, "registry changed", now=4.0))


def test_awaiting_approval_is_not_acted_on() -> None:
    d = decision("better", approval="manual")
    assert d.awaiting_approval and not d.act
    status = evaluated(Status(), d, now=1.0, generation=None)
    assert status.phase is Phase.AWAITING_APPROVAL
    assert next(c for c in status.conditions if c["type"] == ConditionType.AWAITING_APPROVAL)["status"] == "True"


def test_condition_transition_time_moves_only_when_the_status_does() -> None:
    c = set_condition((), "Ready", True, "A", "", "t1", None)
    c = set_condition(c, "Ready", True, "B", "changed reason", "t2", None)
    assert c[0]["lastTransitionTime"] == "t1" and c[0]["reason"] == "B"
    c = set_condition(c, "Ready", False, "C", "", "t3", 7)
    assert c[0]["lastTransitionTime"] == "t3" and c[0]["observedGeneration"] == 7


def test_desired_serving() -> None:
    s = spec()
    under_test = desired_serving(s, Status(phase=Phase.EVALUATING), Pair("1", "2"))
    assert under_test.arms == Arms("1", "2") and (under_test.mode, under_test.challenger_weight) == (Mode.SHADOW, 0.1)
    none = desired_serving(s, Status(phase=Phase.PROMOTED), Pair("2", None))
    assert none.arms == Arms("2", None) and (none.mode, none.challenger_weight) == (Mode.SPLIT, 0.0)
    retired = Status(phase=Phase.ROLLED_BACK, champion_version="1", challenger_version="2")
    assert desired_serving(s, retired, Pair("1", "2")).challenger_weight == 0.0
    # a new challenger after a rollback gets its share again
    assert desired_serving(s, retired, Pair("1", "3")).challenger_weight == 0.1


def test_settled_follows_the_registry() -> None:
    status = Status(phase=Phase.PROMOTED, champion_version="2")
    assert settled(status, Pair("2", None), now=1.0) == status
    moved = settled(Status(phase=Phase.EVALUATING, champion_version="1", challenger_version="2"), Pair("1", None),
                    now=1.0)
    assert moved.phase is Phase.PENDING and moved.challenger_version is None
