"""The drift result document, ``drift.json``: what the drift job writes and the controller reads.

One run of the drift job (`drift_service.job`) writes one document (`write`); the promotion controller
(`k8s.sources.drift.FileDrift`) reads the newest (`read`) for the arm-vs-arm score PSI. The format is the
dataclasses below, with writer and reader next to each other: `to_json` turns a `DriftDocument` into plain
JSON, `from_json` checks and turns it back, field by field. The document carries its version in
``format`` (`FORMAT_VERSION`, like the drift reference's ``reference.json``); a reader meets an unknown
or newer version with a `PermanentError` saying so, never with a guess. Change the layout only together
with `FORMAT_VERSION`. Layout (``format`` 1)::

    {"format": 1, "context": {"model_name", "champion_version", "challenger_version", "reference_source",
                              "predictions_url", "since", "until", "created"},
     "severity": "none", "rows": 1234, "rows_by_arm": {...}, "drifted_features": [...], "policy": {...},
     "features": [{"name", "kind", "severity", "drifted", "n_reference", "n_current", "n_missing",
                   "psi": {"statistic", "score", "threshold", "severe_threshold", "severity", "drifted",
                           "n_reference", "n_current", "bins", "reference_share", "current_share"} | null,
                   "ks": {"d", "p_value", "p_adjusted", "threshold", "drifted", "n_reference",
                          "n_current"} | null}],
     "scores": [{"arm", "model_version", "severity", "n_reference", "n_current", "psi", "ks"}],
     "arms": {"champion_version", "challenger_version", "severity", "n_champion", "n_challenger",
              "psi", "ks"} | null}

Times are ISO 8601 with their offset; a PSI score that is not finite is null. Pure apart from `write`
and `read`; imports no part of kingmaker.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from kingmaker.errors import PermanentError

FORMAT_VERSION = 1
FILE_NAME = "drift.json"


@dataclass(frozen=True)
class Context:
    """Where a drift result came from."""

    model_name: str
    champion_version: str | None
    challenger_version: str | None
    reference_source: str  # e.g. "models:/fraud-detector@champion (version 3, run abc)" or a folder
    predictions_url: str
    since: datetime | None
    until: datetime | None
    created: datetime


@dataclass(frozen=True)
class Psi:
    """A population stability index (`drift_service.stats.PsiResult`)."""

    statistic: str
    score: float | None  # None: not finite
    threshold: float
    severe_threshold: float
    severity: str
    drifted: bool
    n_reference: int
    n_current: int
    bins: tuple[str, ...]
    reference_share: tuple[float, ...]
    current_share: tuple[float, ...]


@dataclass(frozen=True)
class Ks:
    """A two-sample Kolmogorov–Smirnov test (`drift_service.stats.KsResult`)."""

    d: float
    p_value: float
    p_adjusted: float | None
    threshold: float
    drifted: bool
    n_reference: int
    n_current: int


@dataclass(frozen=True)
class Feature:
    name: str
    kind: str
    severity: str
    drifted: bool
    n_reference: int
    n_current: int
    n_missing: int
    psi: Psi | None
    ks: Ks | None


@dataclass(frozen=True)
class Score:
    """One arm's scores against its version's reference scores."""

    arm: str
    model_version: str | None
    severity: str
    n_reference: int
    n_current: int
    psi: Psi | None
    ks: Ks | None


@dataclass(frozen=True)
class Arms:
    """Champion scores against challenger scores in the same window: what the controller reads."""

    champion_version: str | None
    challenger_version: str | None
    severity: str
    n_champion: int
    n_challenger: int
    psi: Psi | None
    ks: Ks | None


@dataclass(frozen=True)
class DriftDocument:
    """One drift run: the result and where it came from."""

    context: Context
    severity: str
    rows: int
    rows_by_arm: Mapping[str, int]
    drifted_features: tuple[str, ...]
    policy: Mapping[str, float | int | str]
    features: tuple[Feature, ...]
    scores: tuple[Score, ...]
    arms: Arms | None

    @property
    def score_psi(self) -> float | None:
        """PSI of the challenger's scores against the champion's, if the run compared the arms."""
        return self.arms.psi.score if self.arms is not None and self.arms.psi is not None else None


# --- writer ----------------------------------------------------------------------------------------

def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def to_json(document: DriftDocument) -> dict[str, Any]:
    """The document as plain JSON values, ``format`` first."""
    return {"format": FORMAT_VERSION, **_plain(document)}


def write(document: DriftDocument, folder: Path) -> Path:
    """``folder/drift.json`` (strict JSON: no NaN)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FILE_NAME
    path.write_text(json.dumps(to_json(document), indent=1, allow_nan=False))
    return path


# --- reader ----------------------------------------------------------------------------------------

class _Bad(ValueError):
    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}")


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Bad(where, f"expected a finite number, got {value!r}")
    return float(value)


def _datetime(value: Any, where: str) -> datetime:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        raise _Bad(where, f"expected an ISO 8601 time, got {value!r}") from None


def _decode(kind: Any, value: Any, where: str) -> Any:
    """``value`` (plain JSON) as ``kind`` (a type hint of the classes above), checked."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _decode(options[0], value, where)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):  # policy values
            return value
        raise _Bad(where, f"expected a number or a string, got {value!r}")
    if origin is tuple:
        if not isinstance(value, list):
            raise _Bad(where, f"expected a list, got {value!r}")
        return tuple(_decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is Mapping:
        if not isinstance(value, dict):
            raise _Bad(where, f"expected a mapping, got {value!r}")
        return {str(k): _decode(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(kind):
        return _record(kind, value, where)
    if kind is float:
        return _number(value, where)
    if kind is datetime:
        return _datetime(value, where)
    if kind in (int, str, bool) and isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise _Bad(where, f"expected {getattr(kind, '__name__', kind)}, got {value!r}")


_hints = functools.cache(typing.get_type_hints)


def _record(cls: Any, value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise _Bad(where, f"expected a mapping, got {value!r}")
    hints = _hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = f"{where}.{f.name}" if where else f.name
        if f.name in value:
            out[f.name] = _decode(hints[f.name], value[f.name], key)
        else:
            raise _Bad(key, "required")
    return cls(**out)


def from_json(raw: Any, *, source: str = FILE_NAME) -> DriftDocument:
    """Check a parsed ``drift.json`` and read it into a `DriftDocument`.

    Raises `PermanentError` with one line naming ``source`` and the field: an unknown or newer ``format``
    (this code reads `FORMAT_VERSION`), a missing field, or a value of the wrong type.
    """
    if not isinstance(raw, dict):
        raise PermanentError(f"{source}: expected a JSON object, got {type(raw).__name__}")
    version = raw.get("format")
    if type(version) is not int or version != FORMAT_VERSION:
        if type(version) is int and version > FORMAT_VERSION:
            raise PermanentError(f"{source}: drift result format {version} is newer than this kingmaker reads "
                                 f"({FORMAT_VERSION}): upgrade the reader")
        raise PermanentError(f"{source}: unknown drift result format {version!r} (this kingmaker reads "
                             f"{FORMAT_VERSION}): not a drift.json of the drift job")
    try:
        document: DriftDocument = _record(DriftDocument, raw, "")
    except _Bad as exc:
        raise PermanentError(f"{source}: {exc}") from None
    return document


def read(path: Path) -> DriftDocument:
    """`from_json` of the file at ``path``; an unreadable file or invalid JSON is a `PermanentError` too."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PermanentError(f"{path}: cannot be read: {exc}") from exc
    return from_json(raw, source=str(path))
