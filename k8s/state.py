"""The ``ChampionChallenger`` resource as the controller sees it: a typed spec in, a typed status out. Pure.

`parse_resource` reads a resource document (from the API server, or a local YAML file in the same format)
into a `Spec` and the current `Status`. The status is the controller's memory between looks and its
record for people: phase, the pair under test, the sequential test's state, the last evaluation with
its evidence, conditions and the history of promotions and rollbacks.

The transitions (`evaluated`, `promoted`, `rolled_back`, `settled`) are pure functions of the old status
and what happened. Two of them leave the resource mid-swap on purpose: a PROMOTE decision moves it to
``Promoting`` with ``championVersion`` = the version being replaced and ``challengerVersion`` = the one
being promoted, and that status is saved *before* any side effect. Whoever reconciles next and finds
``Promoting`` knows the full intent and finishes it (`k8s.act.complete`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from k8s.decide import Decision, Outcome, Reason, State
from k8s.policy import Policy, parse_policy
from k8s.resource import Phase, phase_for
from kingmaker.errors import PermanentError
from kingmaker.roles import Mode

HISTORY_LIMIT = 100  # history entries kept in the status (oldest dropped first)
PREVIOUS_CHAMPION = "previous-champion"  # MLflow alias kept on the version a promotion replaced

#: Phases in which a decision has been recorded but its actions may not all have run.
UNFINISHED = (Phase.PROMOTING, Phase.ROLLING_BACK)


def rfc3339(unix: float) -> str:
    """``2026-11-26T13:00:00.123456Z``: the Kubernetes date-time format."""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def json_safe(value: Any) -> Any:
    """Deep copy with non-finite floats as None and tuples as lists (Kubernetes and MLflow take plain JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


# --- spec ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Traffic:
    """How the router shares traffic while a challenger is under test."""

    challenger_weight: float = 0.1
    mode: Mode = Mode.SPLIT
    routing_key: str | None = None


@dataclass(frozen=True)
class Spec:
    """``metadata`` and ``spec`` of one resource, validated."""

    name: str
    model_name: str
    policy: Policy = field(default_factory=Policy)
    champion_alias: str = "champion"
    challenger_alias: str = "challenger"
    traffic: Traffic = field(default_factory=Traffic)
    approved_challenger_version: str | None = None
    namespace: str | None = None
    generation: int | None = None
    uid: str | None = None
    resource_version: str | None = None


@dataclass(frozen=True)
class Pair:
    """The versions the registry aliases point at now (no challenger alias: None)."""

    champion: str
    challenger: str | None


def _text(path: str, value: Any, default: str | None = None) -> str | None:
    if value is None:
        return default
    if not isinstance(value, str) or not value:
        raise PermanentError(f"{path}: must be a non-empty string, got {value!r}")
    return value


def parse_spec(doc: Mapping[str, Any], *, default_name: str = "fraud-detector") -> Spec:
    """A resource document (``apiVersion/kind/metadata/spec``) or a bare ``spec`` mapping -> `Spec`."""
    if not isinstance(doc, Mapping):
        raise PermanentError(f"resource: expected a mapping, got {type(doc).__name__}")
    meta = doc.get("metadata") or {}
    spec = doc.get("spec", doc)
    if not isinstance(spec, Mapping):
        raise PermanentError(f"spec: expected a mapping, got {type(spec).__name__}")
    aliases = spec.get("aliases") or {}
    traffic = spec.get("traffic") or {}
    weight = traffic.get("challengerWeight", Traffic.challenger_weight)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1.0:
        raise PermanentError(f"spec.traffic.challengerWeight: must be a number in [0, 1], got {weight!r}")
    mode = traffic.get("mode", Mode.SPLIT.value)
    if mode not in [m.value for m in Mode]:
        raise PermanentError(f"spec.traffic.mode: must be one of {', '.join(m.value for m in Mode)}, got {mode!r}")
    champion_alias = _text("spec.aliases.champion", aliases.get("champion"), "champion")
    challenger_alias = _text("spec.aliases.challenger", aliases.get("challenger"), "challenger")
    if champion_alias == challenger_alias:
        raise PermanentError(f"spec.aliases: champion and challenger are the same alias ({champion_alias})")
    generation = meta.get("generation")
    return Spec(
        name=_text("metadata.name", meta.get("name"), default_name) or default_name,
        model_name=_text("spec.modelName", spec.get("modelName")) or _missing("spec.modelName"),
        policy=parse_policy(spec.get("policy"), path="spec.policy"),
        champion_alias=champion_alias or "champion",
        challenger_alias=challenger_alias or "challenger",
        traffic=Traffic(float(weight), Mode(mode), _text("spec.traffic.routingKey", traffic.get("routingKey"))),
        approved_challenger_version=_text("spec.approvedChallengerVersion", spec.get("approvedChallengerVersion")),
        namespace=meta.get("namespace"),
        generation=generation if isinstance(generation, int) else None,
        uid=meta.get("uid"),
        resource_version=meta.get("resourceVersion"),
    )


def _missing(path: str) -> str:
    raise PermanentError(f"{path}: required")


# --- status ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Evaluation:
    """``status.lastEvaluation``: one decision and its evidence."""

    time: str
    outcome: Outcome
    reason: Reason
    message: str
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"time": self.time, "outcome": self.outcome.value, "reason": self.reason.value,
                "message": self.message, "evidence": json_safe(self.evidence)}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Evaluation:
        return cls(time=str(doc.get("time", "")), outcome=Outcome(doc["outcome"]), reason=Reason(doc["reason"]),
                   message=str(doc.get("message", "")), evidence=dict(doc.get("evidence") or {}))


@dataclass(frozen=True)
class Status:
    """``status`` of the resource (field names as in the CRD, camelCase in `to_dict`)."""

    phase: Phase = Phase.PENDING
    champion_version: str | None = None
    challenger_version: str | None = None
    looks: int = 0
    analyses_done: int = 0
    plan_better: bool = False
    last_evaluation: Evaluation | None = None
    conditions: tuple[Mapping[str, Any], ...] = ()
    history: tuple[Mapping[str, Any], ...] = ()
    observed_generation: int | None = None

    def state(self, approved_version: str | None) -> State:
        """What `decide` remembers, for the pair this status belongs to."""
        return State(champion_version=self.champion_version, challenger_version=self.challenger_version,
                     looks=self.looks, analyses_done=self.analyses_done, approved_version=approved_version,
                     plan_better=self.plan_better)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"phase": self.phase.value, "looks": self.looks, "analysesDone": self.analyses_done,
                               "planBetter": self.plan_better, "conditions": [dict(c) for c in self.conditions],
                               "history": [dict(h) for h in self.history]}
        if self.champion_version is not None:
            out["championVersion"] = self.champion_version
        if self.challenger_version is not None:
            out["challengerVersion"] = self.challenger_version
        if self.last_evaluation is not None:
            out["lastEvaluation"] = self.last_evaluation.to_dict()
        if self.observed_generation is not None:
            out["observedGeneration"] = self.observed_generation
        return out

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any] | None) -> Status:
        doc = doc or {}
        try:
            return cls(
                phase=Phase(doc.get("phase", Phase.PENDING.value)),
                champion_version=_opt_str(doc.get("championVersion")),
                challenger_version=_opt_str(doc.get("challengerVersion")),
                looks=int(doc.get("looks", 0)), analyses_done=int(doc.get("analysesDone", 0)),
                plan_better=bool(doc.get("planBetter", False)),
                last_evaluation=Evaluation.from_dict(doc["lastEvaluation"]) if doc.get("lastEvaluation") else None,
                conditions=tuple(doc.get("conditions") or ()), history=tuple(doc.get("history") or ()),
                observed_generation=doc.get("observedGeneration"),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise PermanentError(f"status: cannot be read ({exc}); fix or clear it") from exc


def _opt_str(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


# --- conditions ------------------------------------------------------------------------------

class ConditionType:
    READY = "Ready"  # serving matches the registry and no swap is half done
    EVALUATED = "Evaluated"  # the last look produced a decision (False: ERROR)
    AWAITING_APPROVAL = "AwaitingApproval"  # a promotion waits for `kingmaker promote --approve`
    # the registry, the logs and the API server answered the last reconcile; False: the resource is held where it
    # is (no promotion, no rollback) with the reason, until they answer again
    REACHABLE = "Reachable"


def reachable(status: Status) -> bool:
    """False while the last reconcile could not reach a dependency (`unreachable`)."""
    return not any(c.get("type") == ConditionType.REACHABLE and c.get("status") == "False" for c in status.conditions)


def unreachable(status: Status, message: str, *, now: float) -> Status:
    """A dependency is down (`kingmaker.errors.TemporaryError`): held, phase unchanged, the reason recorded."""
    return replace(status, conditions=set_condition(status.conditions, ConditionType.REACHABLE, False, "TemporaryError",
                                                    message, rfc3339(now), status.observed_generation))


def reached(status: Status, *, now: float) -> Status:
    """Every dependency answered again after `unreachable`."""
    return replace(status, conditions=set_condition(status.conditions, ConditionType.REACHABLE, True, "Reachable", "",
                                                    rfc3339(now), status.observed_generation))


def set_condition(conditions: tuple[Mapping[str, Any], ...], type_: str, status: bool | None, reason: str,
                  message: str, now: str, generation: int | None) -> tuple[Mapping[str, Any], ...]:
    """Upsert one condition; ``lastTransitionTime`` changes only when its status does (meta.SetStatusCondition)."""
    value = "Unknown" if status is None else ("True" if status else "False")
    old = next((c for c in conditions if c.get("type") == type_), None)
    new: dict[str, Any] = {"type": type_, "status": value, "reason": reason, "message": message[:1024],
                           "lastTransitionTime": now if old is None or old.get("status") != value
                           else old.get("lastTransitionTime", now)}
    if generation is not None:
        new["observedGeneration"] = generation
    rest = tuple(c for c in conditions if c.get("type") != type_)
    return tuple(sorted((*rest, new), key=lambda c: str(c.get("type"))))


def _ready(phase: Phase) -> tuple[bool, str]:
    if phase is Phase.PROMOTING:
        return False, "PromotionInProgress"
    if phase is Phase.ROLLING_BACK:
        return False, "RollbackInProgress"
    if phase is Phase.ERROR:
        return False, "Error"
    return True, phase.value


# --- transitions -----------------------------------------------------------------------------

def evaluated(status: Status, decision: Decision, *, now: float, generation: int | None) -> Status:
    """The status once ``decision`` is recorded (before anything is acted on)."""
    ev = decision.evidence
    stamp = rfc3339(now)
    phase = phase_for(decision)
    conditions = set_condition(status.conditions, ConditionType.EVALUATED, decision.outcome is not Outcome.ERROR,
                               decision.reason.value, decision.message, stamp, generation)
    conditions = set_condition(conditions, ConditionType.AWAITING_APPROVAL, decision.awaiting_approval,
                               decision.reason.value if decision.awaiting_approval else "NotRequired",
                               decision.message if decision.awaiting_approval else "", stamp, generation)
    ready, why = _ready(phase)
    conditions = set_condition(conditions, ConditionType.READY, ready, why, decision.message if not ready else "",
                               stamp, generation)
    return replace(
        status, phase=phase, champion_version=ev.champion.version, challenger_version=ev.challenger.version,
        looks=decision.state.looks, analyses_done=decision.state.analyses_done, plan_better=decision.state.plan_better,
        last_evaluation=Evaluation(stamp, decision.outcome, decision.reason, decision.message, ev.as_dict()),
        conditions=conditions, observed_generation=generation if generation is not None else status.observed_generation,
    )


def _history(status: Status, entry: dict[str, Any]) -> tuple[Mapping[str, Any], ...]:
    """Append ``entry`` unless the same action for the same versions at the same time is already there."""
    key = ("time", "action", "championVersion", "challengerVersion")
    if any(all(h.get(k) == entry.get(k) for k in key) for h in status.history):
        return status.history
    return (*status.history, entry)[-HISTORY_LIMIT:]


def _decision_time(status: Status, now: float) -> str:
    return status.last_evaluation.time if status.last_evaluation else rfc3339(now)


def promoted(status: Status, *, now: float, next_challenger: str | None = None) -> Status:
    """``Promoting`` -> ``Promoted``: the challenger is the champion; a new pair starts from zero looks."""
    if status.phase is not Phase.PROMOTING or not status.challenger_version:
        raise PermanentError(f"cannot complete a promotion from phase {status.phase.value}")
    ev = status.last_evaluation
    entry = {"time": _decision_time(status, now), "action": "Promoted", "championVersion": status.challenger_version,
             "previousChampionVersion": status.champion_version, "challengerVersion": status.challenger_version,
             "reason": ev.reason.value if ev else "", "message": ev.message[:1024] if ev else ""}
    stamp = rfc3339(now)
    conditions = set_condition(status.conditions, ConditionType.READY, True, Phase.PROMOTED.value,
                               f"version {status.challenger_version} is the champion", stamp, status.observed_generation)
    return replace(status, phase=Phase.PROMOTED, champion_version=status.challenger_version,
                   challenger_version=next_challenger, looks=0, analyses_done=0, plan_better=False,
                   history=_history(status, entry), conditions=conditions)


def rolled_back(status: Status, *, now: float) -> Status:
    """``RollingBack`` -> ``RolledBack``: the challenger gets no traffic; the champion stays."""
    if status.phase is not Phase.ROLLING_BACK or not status.challenger_version:
        raise PermanentError(f"cannot complete a rollback from phase {status.phase.value}")
    ev = status.last_evaluation
    entry = {"time": _decision_time(status, now), "action": "RolledBack", "championVersion": status.champion_version,
             "challengerVersion": status.challenger_version,
             "reason": ev.reason.value if ev else "", "message": ev.message[:1024] if ev else ""}
    stamp = rfc3339(now)
    conditions = set_condition(status.conditions, ConditionType.READY, True, Phase.ROLLED_BACK.value,
                               f"version {status.challenger_version} takes no traffic", stamp,
                               status.observed_generation)
    return replace(status, phase=Phase.ROLLED_BACK, history=_history(status, entry), conditions=conditions)


def failed(status: Status, message: str, *, now: float, reason: str = "PermanentError") -> Status:
    """A permanent problem outside `decide` (bad spec, registry changed under a swap): a human must look."""
    stamp = rfc3339(now)
    conditions = set_condition(status.conditions, ConditionType.READY, False, reason, message, stamp,
                               status.observed_generation)
    return replace(status, phase=Phase.ERROR, conditions=conditions)


def retired(status: Status, pair: Pair) -> bool:
    """This challenger was rolled back already: it is not evaluated again (a new version starts afresh)."""
    return status.phase is Phase.ROLLED_BACK and status.challenger_version == pair.challenger


def settled(status: Status, pair: Pair, *, now: float) -> Status:
    """Nothing to evaluate (no challenger, or a retired one): follow the registry, keep the phase."""
    if pair.challenger is None and status.champion_version == pair.champion and status.challenger_version is None:
        return status
    if retired(status, pair) and status.champion_version == pair.champion:
        return status
    phase = status.phase if status.phase in (Phase.PROMOTED, Phase.ROLLED_BACK, Phase.PENDING) else Phase.PENDING
    stamp = rfc3339(now)
    conditions = set_condition(status.conditions, ConditionType.READY, True, phase.value,
                               "no challenger under test" if pair.challenger is None else
                               f"challenger {pair.challenger} was rolled back", stamp, status.observed_generation)
    return replace(status, phase=phase, champion_version=pair.champion,
                   challenger_version=pair.challenger if retired(status, pair) else None, conditions=conditions)


# --- what serving should look like ------------------------------------------------------------

@dataclass(frozen=True)
class Arms:
    """The model version each arm must serve (challenger None: no challenger arm is needed)."""

    champion: str
    challenger: str | None


@dataclass(frozen=True)
class Serving:
    """The serving configuration the controller converges to."""

    arms: Arms
    mode: Mode
    challenger_weight: float


def desired_serving(spec: Spec, status: Status, pair: Pair) -> Serving:
    """Arms follow the registry; the challenger gets its share only while it is under test.

    No challenger, or a rolled-back one: split mode at weight 0 (all traffic and no shadow calls to it).
    Otherwise the spec's mode and weight.
    """
    arms = Arms(pair.champion, pair.challenger)
    if pair.challenger is None or retired(status, pair) or status.phase is Phase.ROLLING_BACK:
        return Serving(arms, Mode.SPLIT, 0.0)
    return Serving(arms, spec.traffic.mode, spec.traffic.challenger_weight)
