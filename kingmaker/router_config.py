"""The Router's traffic file ``router.yaml``: its format, reader and writer, in one place.

The Router reads it (and re-reads it when it changes: `bentos.config.ConfigWatcher`); ``kingmaker serve``
and the promotion controller write it (locally ``$KINGMAKER_HOME/serving/router.yaml``, in Kubernetes the
router ConfigMap, updated by an atomic symlink swap). Example::

    mode: split              # split | shadow
    challenger_weight: 0.1   # share of routing keys the challenger answers in split mode
    salt: kingmaker          # change it to draw a fresh, independent split
    routing_field: customer_id   # request "ids" entry used as the routing key (else the request id)
    champion_timeout_ms: 1000
    challenger_timeout_ms: 300   # split mode: bounds the client's wait before the champion answers instead
    shadow_timeout_ms: 2000      # shadow mode: off the response path, so it may be longer
    shadow_max_in_flight: 256    # off-path calls (shadow and pairing) beyond this are skipped (counted), never queued
    pairing: all                 # split mode: the other arm also scores answered rows off the response path,
                                 #   logged as a pair: all | a sample rate in [0, 1] | off
    champion_fallback: none      # split mode, champion down: none = 503; challenger = the challenger answers
    champion_url: null           # optional: override KINGMAKER_CHAMPION_URL (kingmaker serve uses these
    challenger_url: null         #   to re-point an arm to a new process; "" = no challenger)

``mode`` and ``challenger_weight`` are required: the traffic split is never implied, so an empty file, or one
cut short before them (a half-written edit), is refused like any invalid one instead of resetting the split
to the defaults. Every other key is optional, and every unknown key is an error naming it, so a typo (or a
key from a newer release) is refused instead of silently ignored; that strictness is the file's version check.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from kingmaker.errors import PermanentError
from kingmaker.roles import Mode

REQUIRED = ("mode", "challenger_weight")


PAIRING_WORDS = {"all": 1.0, "off": 0.0}


def pairing_text(rate: float) -> str | float:
    """How ``pairing`` is written: ``all``, ``off`` or the sample rate."""
    return {1.0: "all", 0.0: "off"}.get(rate, rate)


class ChampionFallback(StrEnum):
    """Split mode, the champion cannot answer: ``none`` answers 503; ``challenger`` lets the challenger answer
    instead (an unproven model rather than an outage)."""

    NONE = "none"
    CHALLENGER = "challenger"


@dataclass(frozen=True)
class RouterConfig:
    mode: Mode = Mode.SPLIT
    challenger_weight: float = 0.1
    salt: str = "kingmaker"
    routing_field: str = "customer_id"
    champion_timeout_ms: float = 1000.0
    challenger_timeout_ms: float = 300.0
    shadow_timeout_ms: float = 2000.0
    shadow_max_in_flight: int = 256
    champion_fallback: ChampionFallback = ChampionFallback.NONE
    # Split mode: the share of answered rows the other arm also scores off the response path (1.0 = all). Paired
    # rows compare the arms on the same transactions, so a 90/10 split decides about as fast as shadow mode; the
    # cost is shadow mode's (both arms score every paired row), bounded by shadow_max_in_flight.
    pairing: float = 1.0
    champion_url: str | None = None  # None: the Router's environment decides
    challenger_url: str | None = None  # None: the environment decides; "": no challenger

    def as_dict(self) -> dict[str, Any]:
        doc = {f.name: (str(v) if isinstance(v := getattr(self, f.name), StrEnum) else v) for f in fields(self)}
        doc["pairing"] = pairing_text(self.pairing)
        return doc


def parse(doc: object, *, source: str = "router config") -> RouterConfig:
    """Validate a loaded YAML document. Every problem names the key; unknown keys are errors (typos), and the
    `REQUIRED` keys must be there (an empty or truncated file is refused)."""
    if doc is None or doc == {}:
        raise PermanentError(f"{source} is empty: it must state at least {' and '.join(REQUIRED)}")
    if not isinstance(doc, Mapping):
        raise PermanentError(f"{source}: expected a mapping of settings, got {type(doc).__name__}")
    known = {f.name for f in fields(RouterConfig)}
    unknown = sorted(set(doc) - known, key=str)
    if unknown:
        raise PermanentError(f"{source}: unknown key(s) {', '.join(map(str, unknown))}; known: {', '.join(sorted(known))}")
    values: dict[str, Any] = {}
    for key, kind in (("mode", Mode), ("champion_fallback", ChampionFallback)):
        if key in doc:
            try:
                values[key] = kind(str(doc[key]))
            except ValueError:
                raise PermanentError(f"{source}: {key} must be one of {[m.value for m in kind]}, "
                                     f"got {doc[key]!r}") from None
    for key in ("challenger_weight", "champion_timeout_ms", "challenger_timeout_ms", "shadow_timeout_ms"):
        if key in doc:
            value = doc[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise PermanentError(f"{source}: {key} must be a number, got {value!r}")
            values[key] = float(value)
    if "shadow_max_in_flight" in doc:
        value = doc["shadow_max_in_flight"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise PermanentError(f"{source}: shadow_max_in_flight must be a non-negative integer, got {value!r}")
        values["shadow_max_in_flight"] = value
    if "pairing" in doc:
        values["pairing"] = _pairing(doc["pairing"], source)
    for key in ("salt", "routing_field"):
        if key in doc:
            if not isinstance(doc[key], str):
                raise PermanentError(f"{source}: {key} must be a string, got {doc[key]!r}")
            values[key] = doc[key]
    for key in ("champion_url", "challenger_url"):
        if doc.get(key) is not None:
            url = doc[key]
            if not isinstance(url, str) or (url and not url.startswith(("http://", "https://"))):
                raise PermanentError(f"{source}: {key} must be an http(s) URL, got {url!r}")
            values[key] = url.rstrip("/")
    cfg = replace(RouterConfig(), **values)
    if not 0.0 <= cfg.challenger_weight <= 1.0:
        raise PermanentError(f"{source}: challenger_weight must be in [0, 1], got {cfg.challenger_weight}")
    for key in ("champion_timeout_ms", "challenger_timeout_ms", "shadow_timeout_ms"):
        if getattr(cfg, key) <= 0:
            raise PermanentError(f"{source}: {key} must be positive, got {getattr(cfg, key)}")
    if cfg.champion_url == "":
        raise PermanentError(f"{source}: champion_url cannot be empty (there is always a champion)")
    missing = [k for k in REQUIRED if k not in doc]
    if missing:
        raise PermanentError(f"{source}: missing key(s) {', '.join(missing)} (a truncated file?); the traffic split "
                             "is never implied")
    return cfg


def _pairing(value: object, source: str) -> float:
    """``all`` | ``off`` | a sample rate in [0, 1]. YAML 1.1 reads a bare ``off`` as false (and ``on`` as true)."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, str) and value.strip().lower() in PAIRING_WORDS:
        return PAIRING_WORDS[value.strip().lower()]
    if isinstance(value, int | float) and 0.0 <= value <= 1.0:
        return float(value)
    raise PermanentError(f"{source}: pairing must be all, off or a sample rate in [0, 1], got {value!r}")


def load(path: Path) -> RouterConfig:
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise PermanentError(f"cannot read router config {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise PermanentError(f"router config {path} is not UTF-8 text (byte {exc.start}: "
                             f"{exc.object[exc.start:exc.start + 1]!r})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PermanentError(f"router config {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    return parse(doc, source=f"router config {path}")


def dump(cfg: RouterConfig, path: Path) -> None:
    """Write ``cfg`` atomically (write a temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(cfg.as_dict(), sort_keys=False))
    os.replace(tmp, path)


def update(path: Path, *, source: str, **changes: object) -> bool:
    """Set ``changes`` in the file at ``path`` (created with defaults if missing), keeping every other key
    as it is; validated like any document (an existing invalid file is an error, never silently replaced).
    True when the file was written."""
    current = load(path) if path.exists() else RouterConfig()
    wanted = parse({**current.as_dict(), **changes}, source=source)
    if wanted == current and path.exists():
        return False
    dump(wanted, path)
    return True
