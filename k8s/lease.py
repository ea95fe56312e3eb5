"""Leader election on a ``coordination.k8s.io/v1`` Lease: two replicas of the controller never act at once.

client-go's algorithm: the holder renews every few seconds; a candidate takes over only after it has seen
the Lease unchanged for ``leaseDurationSeconds`` on its own clock (no cross-machine clock comparison); the
leader stops acting once it has not renewed for ``renew_deadline`` < lease duration. The Lease is read
and written through `k8s.kube.Kube`; `LeaseElector.guard` is the ``guard`` of `k8s.act.Ports`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from k8s.act import LostLeadership
from k8s.kube import Conflict, Kube, NotFound
from kingmaker.errors import PermanentError, TemporaryError

log = logging.getLogger(__name__)


def default_identity() -> str:
    """``<pod name>_<pid>``: unique per process (the pod name is the hostname in a cluster)."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{os.getpid()}"


class LeaseElector:
    """Leader election on a Lease. `try_acquire_or_renew` once per ``retry_period``; `leading` before acting."""

    def __init__(self, kube: Kube, name: str, identity: str, *, lease_seconds: float = 30.0,
                 renew_deadline: float = 20.0, retry_period: float = 5.0,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], datetime] = lambda: datetime.now(UTC)):
        if not retry_period < renew_deadline < lease_seconds:
            raise PermanentError("leader election needs retry period < renew deadline < lease duration")
        self.kube = kube
        self.name = name
        self.identity = identity
        self.lease_seconds = lease_seconds
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.clock = clock
        self.wall = wall
        self._renewed_at: float | None = None
        self._observed: tuple[str | None, float] = (None, 0.0)  # (resourceVersion, when we first saw it)

    @property
    def leading(self) -> bool:
        return self._renewed_at is not None and self.clock() - self._renewed_at < self.renew_deadline

    def guard(self) -> None:
        if not self.leading:
            raise LostLeadership(f"{self.identity} does not hold Lease {self.name}")

    def _spec(self, *, acquire: datetime, transitions: int, now: datetime, duration: float | None = None) -> Any:
        from kubernetes import client

        return client.V1LeaseSpec(holder_identity=self.identity, lease_duration_seconds=int(duration or self.lease_seconds),
                                  acquire_time=acquire, renew_time=now, lease_transitions=transitions)

    def try_acquire_or_renew(self) -> bool:
        """One round of the election. True if this process leads now."""
        from kubernetes import client

        now_m, now = self.clock(), self.wall()
        try:
            lease = self.kube.read_lease(self.name)
        except NotFound:
            body = client.V1Lease(metadata=client.V1ObjectMeta(name=self.name, namespace=self.kube.namespace),
                                  spec=self._spec(acquire=now, transitions=0, now=now))
            try:
                created = self.kube.create_lease(body)
            except Conflict:
                return self._lost("another candidate created the Lease first")
            return self._won(created, now_m, "acquired (new Lease)")
        except TemporaryError as exc:
            log.warning("leader election: %s", exc)
            return self.leading
        rv = lease.metadata.resource_version
        if rv != self._observed[0]:
            self._observed = (rv, now_m)
        spec = lease.spec or client.V1LeaseSpec()
        holder = spec.holder_identity
        duration = float(spec.lease_duration_seconds or self.lease_seconds)
        if holder and holder != self.identity and now_m - self._observed[1] < duration:
            return self._lost(None)
        mine = holder == self.identity
        lease.spec = self._spec(acquire=spec.acquire_time if mine and spec.acquire_time else now,
                                transitions=(spec.lease_transitions or 0) + (0 if mine else 1), now=now)
        try:
            updated = self.kube.replace_lease(self.name, lease)
        except Conflict:
            return self._lost("the Lease changed while renewing")
        except TemporaryError as exc:
            log.warning("leader election: %s", exc)
            return self.leading
        return self._won(updated, now_m, None if mine else f"acquired (was {holder or 'free'})")

    def _won(self, lease: Any, now_m: float, note: str | None) -> bool:
        was = self.leading
        self._renewed_at = now_m
        self._observed = (lease.metadata.resource_version, now_m)
        if note or not was:
            log.info("leader election: %s leads (%s)", self.identity, note or "renewed")
        return True

    def _lost(self, why: str | None) -> bool:
        if self._renewed_at is not None:
            log.warning("leader election: %s lost the lease%s", self.identity, f": {why}" if why else "")
        self._renewed_at = None
        return False

    def release(self) -> None:
        """Give the Lease up on a clean shutdown so another replica takes over at once."""
        if not self.leading:
            return
        try:
            lease = self.kube.read_lease(self.name)
            if lease.spec and lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = None
                lease.spec.lease_duration_seconds = 1
                self.kube.replace_lease(self.name, lease)
        except (TemporaryError, PermanentError) as exc:
            log.warning("leader election: could not release the Lease: %s", exc)
        self._renewed_at = None

    def run(self, stop: threading.Event) -> None:
        """Renew in the background until ``stop``; then release."""
        while not stop.is_set():
            try:
                self.try_acquire_or_renew()
            except PermanentError as exc:
                log.error("leader election: %s", exc)
                self._renewed_at = None
            stop.wait(self.retry_period)
        self.release()
