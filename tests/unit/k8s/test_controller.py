"""The reconcile loop in Kubernetes mode: when each resource is reconciled (woken by the watch, when due,
while a swap is under way), with the interval read through the one policy parser."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from k8s.controller import _interval, operate


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


# --- the Kubernetes loop: woken by the watch, not polling ------------------------------------------------

class FakeFeed:
    """A `ResourceFeed` on a simulated clock: `wait` sleeps until the next scripted change (then True) or the
    timeout; the script maps a time to a change of the resources."""

    def __init__(self, docs: list[dict[str, Any]], script: dict[float, Any], stop: threading.Event, end: float):
        self.docs, self.script, self.stop, self.end = docs, dict(script), stop, end
        self.now = 0.0

    def resources(self) -> list[dict[str, Any]]:
        return self.docs

    def wait(self, timeout: float) -> bool:
        due = [t for t in self.script if t <= self.now + timeout]
        if due:
            self.now = min(due)
            self.script.pop(self.now)(self.docs)
        else:
            self.now += timeout
        if self.now >= self.end:
            self.stop.set()
        return bool(due)


def test_operate_acts_when_leading_on_changes_at_once_when_due_and_retries_swaps_every_tick() -> None:
    docs = [{"metadata": {"name": "x", "generation": 1},
             "spec": {"modelName": "m", "policy": {"evaluationIntervalSeconds": 60}}},
            {"metadata": {"name": "y", "generation": 1}, "spec": {"modelName": "m"}, "status": {"phase": "Promoting"}}]

    def approve(d: list[dict[str, Any]]) -> None:
        d[0]["metadata"]["generation"] = 2  # an approval edits x's spec

    def finished(d: list[dict[str, Any]]) -> None:
        d[1]["status"]["phase"] = "Promoted"  # y's swap is done

    stop = threading.Event()
    feed = FakeFeed(docs, {25.0: approve, 47.0: finished}, stop, end=100.0)
    runs: list[tuple[str, float]] = []

    class Elector:
        @property
        def leading(self) -> bool:
            return feed.now >= 10.0  # wins the Lease at t=10

    def controller_for(doc: Any) -> Any:
        class Reconcile:
            def run_once(self) -> None:
                runs.append((doc["metadata"]["name"], feed.now))

        return Reconcile()

    operate(feed, controller_for, Elector(), stop, tick=10.0, clock=lambda: feed.now)  # type: ignore[arg-type]
    # x: on taking over, at once on its spec change (t=25, not at the next tick), then one interval later;
    # y (Promoting, 300 s interval): every tick until the swap is done
    assert [t for n, t in runs if n == "x"] == [10.0, 25.0, 85.0]
    assert [t for n, t in runs if n == "y"] == [10.0, 20.0, 35.0, 45.0]
