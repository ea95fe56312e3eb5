"""`kingmaker serve` restarts a dead child with backoff (`bentos.cli.Backoff`); the real restart under load is
tested with real processes in tests/integration/test_bentos_faults.py."""

from __future__ import annotations

from bentos.cli import Backoff


def test_backoff_doubles_up_to_a_cap_and_resets_after_a_stable_run() -> None:
    b = Backoff(first_s=1.0, max_s=30.0, stable_s=60.0)
    assert [b.next_delay(ran_for_s=2.0) for _ in range(7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert b.restarts == 7
    assert b.next_delay(ran_for_s=61.0) == 1.0  # it had run a minute: a new crash, not a crash loop
    assert b.next_delay(ran_for_s=0.5) == 2.0
