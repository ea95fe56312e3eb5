"""The Router's traffic file is hot-reloaded (including ConfigMap-style symlink swaps); its format is
tested with `kingmaker.router_config`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bentos.config import ConfigWatcher
from kingmaker.errors import PermanentError
from kingmaker.router_config import RouterConfig, dump


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_hot_reload_on_change_and_rate_limited(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    dump(RouterConfig(challenger_weight=0.1), path)
    clock = Clock()
    events: list[tuple[str, float]] = []
    watcher = ConfigWatcher(path, interval_s=1.0, clock=clock, on_reload=lambda o, c: events.append((o, c.challenger_weight)))
    assert watcher.current().challenger_weight == 0.1
    dump(RouterConfig(challenger_weight=0.2), path)
    os.utime(path, ns=(1, 10**9))  # make the change visible even on coarse mtime clocks
    assert watcher.current().challenger_weight == 0.1  # not re-checked before the interval
    clock.t = 1.5
    assert watcher.current().challenger_weight == 0.2
    assert events == [("ok", 0.2)]


def test_invalid_reload_keeps_the_last_good_config(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    dump(RouterConfig(challenger_weight=0.1), path)
    clock = Clock()
    events: list[str] = []
    watcher = ConfigWatcher(path, interval_s=1.0, clock=clock, on_reload=lambda o, c: events.append(o))
    path.write_text("challenger_weight: 7\n")
    clock.t = 2
    assert watcher.current().challenger_weight == 0.1
    assert events == ["invalid"] and "challenger_weight must be in" in (watcher.last_error or "")
    path.unlink()
    clock.t = 4
    assert watcher.current().challenger_weight == 0.1 and "disappeared" in (watcher.last_error or "")
    dump(RouterConfig(challenger_weight=0.5), path)
    clock.t = 6
    assert watcher.current().challenger_weight == 0.5 and watcher.last_error is None


def test_configmap_style_symlink_swap(tmp_path: Path) -> None:
    """Kubernetes updates a mounted ConfigMap by pointing ..data at a new folder."""
    for name, weight in (("v1", 0.1), ("v2", 0.4)):
        dump(RouterConfig(challenger_weight=weight), tmp_path / name / "router.yaml")
    (tmp_path / "..data").symlink_to(tmp_path / "v1")
    (tmp_path / "router.yaml").symlink_to(tmp_path / "..data" / "router.yaml")
    clock = Clock()
    watcher = ConfigWatcher(tmp_path / "router.yaml", interval_s=1.0, clock=clock)
    assert watcher.current().challenger_weight == 0.1
    tmp = tmp_path / "..data_tmp"
    tmp.symlink_to(tmp_path / "v2")
    os.replace(tmp, tmp_path / "..data")
    clock.t = 1
    assert watcher.current().challenger_weight == 0.4


def test_no_file_means_defaults() -> None:
    assert ConfigWatcher(None).current() == RouterConfig()


def test_invalid_file_at_start_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    path.write_text("mode: nope\n")
    with pytest.raises(PermanentError):
        ConfigWatcher(path)
