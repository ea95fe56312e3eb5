"""`kingmaker serve` restarts a dead child with backoff (`bentos.cli.Backoff`) and tries a re-point again; the real
restart under load is tested with real processes in tests/integration/test_bentos_faults.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from bentos.cli import Backoff, Supervisor
from kingmaker import arms, router_config
from kingmaker.errors import TemporaryError


def test_backoff_doubles_up_to_a_cap_and_resets_after_a_stable_run() -> None:
    b = Backoff(first_s=1.0, max_s=30.0, stable_s=60.0)
    assert [b.next_delay(ran_for_s=2.0) for _ in range(7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert b.restarts == 7
    assert b.next_delay(ran_for_s=61.0) == 1.0  # it had run a minute: a new crash, not a crash loop
    assert b.next_delay(ran_for_s=0.5) == 2.0


def test_a_generation_that_could_not_be_applied_is_tried_again_with_backoff(tmp_path: Path) -> None:
    """A failed re-point used to mark the generation applied: the arm stayed old while the arms file (and
    the controller) said new, for good. Now it is tried again at 5 s, 10 s, ... until it is applied."""
    now = [0.0]
    sup = Supervisor("127.0.0.1", "fraud-detector", tmp_path / "router.yaml", tmp_path, 1.0, clock=lambda: now[0])
    sup.versions = {"champion": "1", "challenger": "2"}
    outcomes = iter([False, False, True])
    calls: list[tuple[float, str, str | None]] = []

    def repoint(arm: str, version: str | None) -> bool:
        calls.append((now[0], arm, version))
        ok = next(outcomes)
        if ok:
            sup.versions[arm] = version or ""
        return ok

    sup.repoint = repoint  # type: ignore[method-assign]
    path = tmp_path / arms.FILE_NAME
    arms.write(path, "fraud-detector", "1", "3", generation=2)
    seen = 1
    for t in [0.0, 1.0, 4.9, 5.0, 6.0, 14.9, 15.0, 16.0]:
        now[0] = t
        seen = sup.follow(path, seen)
        assert seen == (2 if t >= 15.0 else 1), t
    assert calls == [(0.0, "challenger", "3"), (5.0, "challenger", "3"), (15.0, "challenger", "3")]
    assert sup.retry is None

    arms.write(path, "fraud-detector", "1", "4", generation=3)  # a newer generation starts a fresh backoff
    outcomes = iter([False, True])
    now[0] = 20.0
    assert sup.follow(path, seen) == 2
    arms.write(path, "fraud-detector", "1", "5", generation=4)
    assert sup.follow(path, seen) == 4  # not held back by the failed generation's backoff
    assert calls[-2:] == [(20.0, "challenger", "4"), (20.0, "challenger", "5")]


class _Service:
    """A stand-in for a started Scorer: its URL, and whether it was stopped."""

    def __init__(self, url: str) -> None:
        self.url, self.stopped = url, False

    def wait_ready(self, timeout: float) -> None:
        pass

    def stop(self) -> None:
        self.stopped = True


def test_a_move_the_router_does_not_make_is_written_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-pointing or removing an arm that the Router does not take up puts the old URL back in its config,
    keeps the old arm serving and says why; the new Scorer is stopped."""
    config = tmp_path / "router.yaml"
    sup = Supervisor("127.0.0.1", "fraud-detector", config, tmp_path, 1.0)
    old, new = _Service("http://127.0.0.1:9001"), _Service("http://127.0.0.1:9002")
    sup.router = _Service("http://127.0.0.1:9000")  # type: ignore[assignment]
    sup.arms, sup.versions = {"challenger": old}, {"challenger": "2"}  # type: ignore[dict-item]
    router_config.update(config, source="test", challenger_url=old.url)
    moves: list[str | None] = []

    def stuck(arm: str, version: str | None) -> None:
        moves.append(router_config.load(config).challenger_url)
        raise TemporaryError(f"the Router did not switch its {arm} arm to {version or 'none'}")

    monkeypatch.setattr(sup, "_wait_router", stuck)
    monkeypatch.setattr(sup, "start_arm", lambda arm, uri, port: new)

    assert sup.repoint("challenger", "3") is False
    assert sup.repoint("challenger", None) is False
    assert moves == [new.url, ""]  # what the Router was asked to take up
    assert router_config.load(config).challenger_url == old.url
    assert sup.arms == {"challenger": old} and sup.versions == {"challenger": "2"}
    assert new.stopped and not old.stopped
