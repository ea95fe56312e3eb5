"""The arm choice: sticky, weighted within +-0.5 pp over 100,000 keys, monotone under a ramp."""

from __future__ import annotations

import pytest

from bentos.routing import CircuitBreaker, choose_arm, pair_sampled, routing_key, unit_hash
from kingmaker.roles import Arm

KEYS = [f"customer-{i:06d}" for i in range(100_000)]


def challenger_keys(weight: float, salt: str = "s1") -> set[str]:
    return {k for k in KEYS if choose_arm(k, weight, salt) is Arm.CHALLENGER}


def test_unit_hash_is_stable_and_in_range() -> None:
    # Pinned values: the split must not change between releases, processes or machines.
    assert unit_hash("customer-000001", "kingmaker") == pytest.approx(unit_hash("customer-000001", "kingmaker"))
    values = [unit_hash(k, "salt") for k in KEYS[:1000]]
    assert all(0.0 <= v < 1.0 for v in values)
    assert unit_hash("a", "x") != unit_hash("a", "y")
    assert unit_hash("ab", "c") != unit_hash("a", "bc")  # salt and key do not run together


def test_unit_hash_known_value() -> None:
    import hashlib

    digest = hashlib.blake2b(b"kingmaker\x1fcustomer-42", digest_size=8).digest()
    assert unit_hash("customer-42", "kingmaker") == int.from_bytes(digest, "big") / 2**64


@pytest.mark.parametrize("weight", [0.01, 0.1, 0.2, 0.5, 0.9])
def test_observed_share_is_within_half_a_point(weight: float) -> None:
    share = len(challenger_keys(weight)) / len(KEYS)
    assert abs(share - weight) <= 0.005, f"observed {share:.4f} for weight {weight}"


def test_sticky_same_inputs_same_arm() -> None:
    first = [choose_arm(k, 0.3, "s1") for k in KEYS[:5000]]
    again = [choose_arm(k, 0.3, "s1") for k in KEYS[:5000]]
    assert first == again


def test_monotone_ramp_never_moves_a_key_back() -> None:
    ramp = [challenger_keys(w) for w in (0.1, 0.2, 0.5)]
    assert ramp[0] <= ramp[1] <= ramp[2]
    assert len(ramp[0]) < len(ramp[1]) < len(ramp[2])


def test_salt_draws_an_independent_split() -> None:
    a, b = challenger_keys(0.5, "s1"), challenger_keys(0.5, "s2")
    overlap = len(a & b) / len(KEYS)
    assert abs(overlap - 0.25) < 0.01  # independent halves overlap on a quarter


def test_extreme_weights() -> None:
    assert all(choose_arm(k, 0.0, "s") is Arm.CHAMPION for k in KEYS[:2000])
    assert all(choose_arm(k, 1.0, "s") is Arm.CHALLENGER for k in KEYS[:2000])


@pytest.mark.parametrize("weight", [-0.1, 1.5, float("nan")])
def test_invalid_weight(weight: float) -> None:
    with pytest.raises(ValueError, match="challenger weight"):
        choose_arm("k", weight, "s")


def test_routing_key_prefers_the_configured_entity_field() -> None:
    assert routing_key("req-1", {"customer_id": "c9", "card_id": "x"}, "customer_id") == "c9"
    assert routing_key("req-1", {"card_id": "x"}, "customer_id") == "req-1"
    assert routing_key("req-1", None, "customer_id") == "req-1"
    assert routing_key("req-1", {"customer_id": ""}, "customer_id") == "req-1"
    assert routing_key("req-1", {"customer_id": "c9"}, "") == "req-1"


def test_circuit_breaker_opens_probes_and_closes() -> None:
    cb = CircuitBreaker(failure_threshold=3, reset_after_s=10.0)
    for t in range(2):
        assert cb.allow(t)
        cb.record_failure(t)
    assert not cb.is_open
    cb.record_failure(2.0)
    assert cb.is_open
    assert not cb.allow(5.0)  # still cooling down
    assert cb.allow(12.0)  # one probe ...
    assert not cb.allow(12.1)  # ... only one
    cb.record_failure(12.2)  # the probe failed: open again from now
    assert not cb.allow(20.0)
    assert cb.allow(22.3)
    cb.record_success()
    assert not cb.is_open and cb.allow(22.4) and cb.allow(22.5)


def test_circuit_breaker_success_resets_the_count() -> None:
    cb = CircuitBreaker(failure_threshold=3)
    cb.record_failure(0)
    cb.record_failure(0)
    cb.record_success()
    cb.record_failure(0)
    cb.record_failure(0)
    assert not cb.is_open


def test_pair_sampling_is_a_deterministic_share_of_request_ids() -> None:
    ids = [f"tx-{i}" for i in range(20_000)]
    assert all(pair_sampled(i, 1.0, "s") for i in ids[:100]) and not any(pair_sampled(i, 0.0, "s") for i in ids[:100])
    share = sum(pair_sampled(i, 0.2, "s") for i in ids) / len(ids)
    assert abs(share - 0.2) < 0.01
    assert [pair_sampled(i, 0.2, "s") for i in ids[:500]] == [pair_sampled(i, 0.2, "s") for i in ids[:500]]
    # independent of the routing draw with the same salt: paired rows are not only the challenger's keys
    both = sum(pair_sampled(i, 0.2, "s") and unit_hash(i, "s") < 0.2 for i in ids) / len(ids)
    assert abs(both - 0.04) < 0.01
