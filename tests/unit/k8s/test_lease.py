"""Lease-based leader election: what is sent, and two replicas never leading at the same time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from k8s.act import LostLeadership
from k8s.kube import Kube
from k8s.lease import LeaseElector
from kingmaker.errors import PermanentError

from .fake_kube import NS, FakeApiServer

LEASE = "kingmaker-controller"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def wall(self) -> datetime:
        return datetime(2026, 11, 26, tzinfo=UTC) + timedelta(seconds=self.t)


def elector(server: FakeApiServer, identity: str, clock: Clock) -> LeaseElector:
    return LeaseElector(Kube(server.api_client(), NS), LEASE, identity, lease_seconds=15, renew_deadline=10,
                        retry_period=2, clock=clock, wall=clock.wall)


def test_first_candidate_creates_the_lease_and_renews_it() -> None:
    server, clock = FakeApiServer(), Clock()
    a = elector(server, "a", clock)
    assert a.try_acquire_or_renew() and a.leading
    (create,) = server.sent("POST", "leases")
    assert create.path == f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"
    assert create.body["metadata"]["name"] == LEASE
    spec = create.body["spec"]
    assert (spec["holderIdentity"], spec["leaseDurationSeconds"], spec["leaseTransitions"]) == ("a", 15, 0)
    acquired = spec["acquireTime"]
    clock.t += 2
    assert a.try_acquire_or_renew()
    (renew,) = server.sent("PUT", "leases")
    assert renew.path.endswith(f"/leases/{LEASE}")
    assert renew.body["metadata"]["resourceVersion"] == create_rv(server, before=True)
    assert renew.body["spec"]["holderIdentity"] == "a" and renew.body["spec"]["leaseTransitions"] == 0
    assert renew.body["spec"]["acquireTime"] == acquired and renew.body["spec"]["renewTime"] > acquired


def create_rv(server: FakeApiServer, before: bool) -> str:
    """The Lease's resourceVersion before the last write (what a renewal must carry)."""
    return str(int(server.get("lease", LEASE)["metadata"]["resourceVersion"]) - (1 if before else 0))


def test_a_live_lease_of_another_is_respected_and_an_expired_one_taken_over() -> None:
    server, clock = FakeApiServer(), Clock()
    a, b = elector(server, "a", clock), elector(server, "b", clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    assert server.sent("PUT") == []  # b did not touch a live lease
    clock.t += 14  # a died; b has seen the same record for 14 s < 15 s
    assert not b.try_acquire_or_renew()
    clock.t += 2
    assert b.try_acquire_or_renew() and b.leading
    lease = server.get("lease", LEASE)["spec"]
    assert lease["holderIdentity"] == "b" and lease["leaseTransitions"] == 1
    assert not a.leading  # a stopped trusting its lease long before b took over
    assert not a.try_acquire_or_renew()  # and the next round tells it so


def test_a_conflict_while_renewing_means_not_leading() -> None:
    server, clock = FakeApiServer(), Clock()
    a = elector(server, "a", clock)
    assert a.try_acquire_or_renew()
    server.failures = [("PUT", "leases", 409)]
    assert not a.try_acquire_or_renew() and not a.leading
    with pytest.raises(LostLeadership):
        a.guard()


def test_leading_expires_without_renewal_even_if_the_api_is_down() -> None:
    server, clock = FakeApiServer(), Clock()
    a = elector(server, "a", clock)
    assert a.try_acquire_or_renew()
    server.failures = [("GET", "leases", 503)] * 10
    clock.t += 5
    assert a.try_acquire_or_renew()  # still within the renew deadline
    clock.t += 6
    assert not a.try_acquire_or_renew() and not a.leading


def test_release_hands_over_at_once() -> None:
    server, clock = FakeApiServer(), Clock()
    a, b = elector(server, "a", clock), elector(server, "b", clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    a.release()
    assert "holderIdentity" not in server.get("lease", LEASE)["spec"]
    assert b.try_acquire_or_renew()


def test_durations_must_nest() -> None:
    with pytest.raises(PermanentError):
        LeaseElector(Kube(FakeApiServer().api_client(), NS), LEASE, "a", lease_seconds=10, renew_deadline=10)


def test_two_replicas_never_both_lead() -> None:
    """Both run the election every 2 s; one of them stalls now and then. Check at every 0.5 s step."""
    server, clock = FakeApiServer(), Clock()
    replicas = {"a": elector(server, "a", clock), "b": elector(server, "b", clock)}
    stalled = {"a": (30.0, 60.0), "b": (100.0, 140.0)}  # windows (relative seconds) when a replica hangs
    leaders_seen = set()
    start = clock.t
    for step in range(400):
        clock.t = start + step * 0.5
        for name, e in replicas.items():
            lo, hi = stalled[name]
            if step % 4 == (0 if name == "a" else 2) and not lo <= clock.t - start < hi:
                e.try_acquire_or_renew()
        leading = [n for n, e in replicas.items() if e.leading]
        assert len(leading) <= 1, f"both lead at t={clock.t - start}"
        leaders_seen.update(leading)
    assert leaders_seen == {"a", "b"}  # leadership did move when the leader stalled
