"""The Router's traffic file: validation and hot reload (including ConfigMap-style symlink swaps)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bentos.config import ConfigWatcher, RouterConfig, dump, load, parse
from kingmaker.errors import PermanentError
from kingmaker.roles import Mode


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_defaults_and_full_document() -> None:
    assert parse(None) == RouterConfig()
    cfg = parse({"mode": "shadow", "challenger_weight": 0.25, "salt": "v2", "routing_field": "card_id",
                 "champion_timeout_ms": 500, "challenger_timeout_ms": 100, "shadow_timeout_ms": 900,
                 "shadow_max_in_flight": 10})
    assert cfg.mode is Mode.SHADOW and cfg.challenger_weight == 0.25 and cfg.routing_field == "card_id"
    assert cfg.shadow_timeout_ms == 900.0
    assert cfg.as_dict()["mode"] == "shadow"


@pytest.mark.parametrize(("doc", "message"), [
    ({"weight": 0.2}, "unknown key"),
    ({"mode": "canary"}, "mode must be one of"),
    ({"challenger_weight": 1.2}, "challenger_weight must be in"),
    ({"challenger_weight": True}, "challenger_weight must be a number"),
    ({"challenger_weight": "0.1"}, "challenger_weight must be a number"),
    ({"champion_timeout_ms": 0}, "champion_timeout_ms must be positive"),
    ({"salt": 3}, "salt must be a string"),
    ({"shadow_max_in_flight": -1}, "shadow_max_in_flight"),
    ({"challenger_url": "ftp://x"}, "challenger_url must be an http"),
    ({"champion_url": ""}, "champion_url cannot be empty"),
    ([1, 2], "expected a mapping"),
])
def test_invalid_documents_name_the_key(doc: object, message: str) -> None:
    with pytest.raises(PermanentError, match=message):
        parse(doc)


def test_arm_urls_are_optional_overrides() -> None:
    assert RouterConfig().champion_url is None and RouterConfig().challenger_url is None
    cfg = parse({"champion_url": "http://127.0.0.1:4001/", "challenger_url": ""})
    assert cfg.champion_url == "http://127.0.0.1:4001" and cfg.challenger_url == ""
    assert parse(cfg.as_dict()) == cfg  # what the controller writes back is still valid


def test_load_reports_yaml_errors(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    path.write_text("mode: [split\n")
    with pytest.raises(PermanentError, match="not valid YAML"):
        load(path)
    with pytest.raises(PermanentError, match="cannot read"):
        load(tmp_path / "missing.yaml")


def test_dump_and_load_roundtrip(tmp_path: Path) -> None:
    cfg = RouterConfig(mode=Mode.SHADOW, challenger_weight=0.3)
    dump(cfg, tmp_path / "sub" / "router.yaml")
    assert load(tmp_path / "sub" / "router.yaml") == cfg


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
