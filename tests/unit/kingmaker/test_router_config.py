"""The Router's traffic file format: validation, reading and writing (`kingmaker.router_config`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kingmaker.errors import PermanentError
from kingmaker.roles import Mode
from kingmaker.router_config import ChampionFallback, RouterConfig, dump, load, parse, update

SPLIT = {"mode": "split", "challenger_weight": 0.1}  # the keys every document states


def test_defaults_and_full_document() -> None:
    assert parse(SPLIT) == RouterConfig()
    cfg = parse({"mode": "shadow", "challenger_weight": 0.25, "salt": "v2", "routing_field": "card_id",
                 "champion_timeout_ms": 500, "challenger_timeout_ms": 100, "shadow_timeout_ms": 900,
                 "shadow_max_in_flight": 10, "champion_fallback": "challenger"})
    assert cfg.mode is Mode.SHADOW and cfg.challenger_weight == 0.25 and cfg.routing_field == "card_id"
    assert cfg.shadow_timeout_ms == 900.0 and cfg.champion_fallback is ChampionFallback.CHALLENGER
    assert cfg.as_dict()["mode"] == "shadow" and cfg.as_dict()["champion_fallback"] == "challenger"
    assert RouterConfig().champion_fallback is ChampionFallback.NONE  # off by default


@pytest.mark.parametrize(("text", "message"), [
    ("", "is empty"),
    ("# only a comment\n", "is empty"),
    ("{}\n", "is empty"),
    ("salt: s\nrouting_field: card_id\n", "missing key.s. mode, challenger_weight"),
    ("mode: split\n", "missing key.s. challenger_weight .a truncated file"),
])
def test_empty_or_truncated_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    """An empty file (or one cut short) used to reset every setting to its default: weight 0.3 became 0.1."""
    path = tmp_path / "router.yaml"
    path.write_text(text)
    with pytest.raises(PermanentError, match=message):
        load(path)


def test_a_file_that_is_not_utf8_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    path.write_bytes(b"mode: split\nchallenger_weight: 0.3\nsalt: caf\xe9\n")
    with pytest.raises(PermanentError, match=r"router.yaml is not UTF-8 text \(byte 44"):
        load(path)


@pytest.mark.parametrize(("doc", "message"), [
    ({**SPLIT, "weight": 0.2}, "unknown key"),
    ({**SPLIT, "mode": "canary"}, "mode must be one of"),
    ({**SPLIT, "champion_fallback": "shadow"}, "champion_fallback must be one of"),
    ({**SPLIT, "challenger_weight": 1.2}, "challenger_weight must be in"),
    ({**SPLIT, "challenger_weight": True}, "challenger_weight must be a number"),
    ({**SPLIT, "challenger_weight": "0.1"}, "challenger_weight must be a number"),
    ({**SPLIT, "champion_timeout_ms": 0}, "champion_timeout_ms must be positive"),
    ({**SPLIT, "salt": 3}, "salt must be a string"),
    ({**SPLIT, "shadow_max_in_flight": -1}, "shadow_max_in_flight"),
    ({**SPLIT, "challenger_url": "ftp://x"}, "challenger_url must be an http"),
    ({**SPLIT, "champion_url": ""}, "champion_url cannot be empty"),
    ([1, 2], "expected a mapping"),
    (None, "is empty"),
])
def test_invalid_documents_name_the_key(doc: object, message: str) -> None:
    with pytest.raises(PermanentError, match=message):
        parse(doc)


@pytest.mark.parametrize(("value", "rate", "written"), [
    ("all", 1.0, "all"), ("off", 0.0, "off"), (False, 0.0, "off"), (True, 1.0, "all"), (0.25, 0.25, 0.25),
    (1, 1.0, "all"), (0, 0.0, "off"), ("ALL", 1.0, "all"),
])
def test_pairing_is_all_off_or_a_rate(value: object, rate: float, written: object) -> None:
    assert RouterConfig().pairing == 1.0  # paired by default (see the field's comment)
    cfg = parse({**SPLIT, "pairing": value})
    assert cfg.pairing == rate and cfg.as_dict()["pairing"] == written and parse(cfg.as_dict()) == cfg


def test_pairing_off_written_bare_in_yaml_is_read_as_off(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    path.write_text("mode: split\nchallenger_weight: 0.1\npairing: off\n")  # YAML 1.1: a bare off is false
    assert load(path).pairing == 0.0
    dump(load(path), path)
    assert load(path).pairing == 0.0


@pytest.mark.parametrize("value", ["some", 1.5, -0.1, float("nan"), None, [1]])
def test_invalid_pairing_is_refused_naming_the_key(value: object) -> None:
    with pytest.raises(PermanentError, match=r"pairing must be all, off or a sample rate in \[0, 1\]"):
        parse({**SPLIT, "pairing": value})


def test_arm_urls_are_optional_overrides() -> None:
    assert RouterConfig().champion_url is None and RouterConfig().challenger_url is None
    cfg = parse({**SPLIT, "champion_url": "http://127.0.0.1:4001/", "challenger_url": ""})
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


def test_update_keeps_other_keys_and_writes_only_on_change(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    assert update(path, source="test", challenger_weight=0.3)  # created with defaults + the change
    assert load(path) == RouterConfig(challenger_weight=0.3)
    dump(RouterConfig(salt="s2", challenger_weight=0.3), path)
    before = path.stat().st_mtime_ns
    assert not update(path, source="test", challenger_weight=0.3)
    assert path.stat().st_mtime_ns == before
    assert update(path, source="test", mode="shadow")
    assert load(path) == RouterConfig(mode=Mode.SHADOW, salt="s2", challenger_weight=0.3)
    with pytest.raises(PermanentError, match="test: challenger_weight must be in"):
        update(path, source="test", challenger_weight=2.0)
    assert load(path).challenger_weight == 0.3  # a refused change leaves the file alone
