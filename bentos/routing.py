"""Which arm answers a request: a pure function of (routing key, challenger weight, salt).

The key is hashed with BLAKE2b (stable across processes, machines and Python versions, unlike
``hash()``) into a uniform number ``u`` in [0, 1); the challenger answers iff ``u < weight``. So:

- **sticky**: the same key, weight and salt always give the same arm;
- **monotone**: raising the weight only adds keys to the challenger (``u < 0.1`` implies ``u < 0.2``),
  so an entity on the challenger never moves back to the champion during a ramp;
- **re-shuffled only on purpose**: changing the salt draws a fresh, independent split.

No I/O here; the Router calls these functions and the tests check them directly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from kingmaker.roles import Arm

_SCALE = float(2**64)


def unit_hash(key: str, salt: str) -> float:
    """A uniform number in [0, 1) determined by ``key`` and ``salt`` only."""
    digest = hashlib.blake2b(f"{salt}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def choose_arm(routing_key: str, challenger_weight: float, salt: str) -> Arm:
    """The arm for one routing key: the challenger iff ``unit_hash(key, salt) < challenger_weight``."""
    if not 0.0 <= challenger_weight <= 1.0:
        raise ValueError(f"challenger weight must be in [0, 1], got {challenger_weight}")
    if challenger_weight <= 0.0:
        return Arm.CHAMPION
    return Arm.CHALLENGER if unit_hash(routing_key, salt) < challenger_weight else Arm.CHAMPION


def pair_sampled(request_id: str, rate: float, salt: str) -> bool:
    """Split mode's pairing sample: is this request also scored by the arm that did not answer it? Hashed like
    the routing key (on the request id, with its own salt) so a replayed request gets the same answer."""
    return rate >= 1.0 or (rate > 0.0 and unit_hash(request_id, f"{salt}\x1fpairing") < rate)


def routing_key(request_id: str, ids: Mapping[str, str] | None, field_name: str | None) -> str:
    """The configured entity id (e.g. ``customer_id``) when the request carries it, else the request id."""
    if field_name and ids:
        value = ids.get(field_name)
        if value:
            return value
    return request_id


@dataclass
class CircuitBreaker:
    """Skips an arm that keeps failing, then lets one probe through after ``reset_after_s``.

    Pure state: the caller passes the time (monotonic seconds), so tests need no clock.
    """

    failure_threshold: int = 5
    reset_after_s: float = 5.0
    failures: int = 0
    opened_at: float | None = None
    _probing: bool = field(default=False, repr=False)

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def allow(self, now: float) -> bool:
        """May a request be sent now? After the reset delay exactly one probe is let through."""
        if self.opened_at is None:
            return True
        if not self._probing and now - self.opened_at >= self.reset_after_s:
            self._probing = True
            return True
        return False

    def record_success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self._probing = False

    def record_failure(self, now: float) -> None:
        self.failures += 1
        if self._probing or self.failures >= self.failure_threshold:
            self.opened_at = now
            self._probing = False
