"""Request validation against the model signature (the MLflow ``MLmodel`` input schema).

The feature list and each column's type come from the registered model's signature, never from a
hard-coded list. Every problem names the field and the reason, in the same shape as BentoML's own
(pydantic) 400 answers: ``{"loc": [...], "msg": "...", "type": "..."}``.

Pure functions over plain values, NumPy and Arrow tables; the services turn `InvalidRequest` into a
4xx response.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from bentos.messages import ErrorCode

#: MLflow column types we can score, and what a JSON value of that type may be.
FLOAT_TYPES = frozenset({"double", "float"})
INT_TYPES = frozenset({"long", "integer"})
BOOL_TYPES = frozenset({"boolean"})
SUPPORTED_TYPES = FLOAT_TYPES | INT_TYPES | BOOL_TYPES
MAX_PROBLEMS = 20  # an answer lists at most this many problems
#: The largest magnitude a feature value may have, on every path (JSON and Arrow): the models compute in
#: 32-bit floats (XGBoost always), so a finite double beyond this would silently become infinity.
MAX_ABS = float(np.finfo(np.float32).max)
RANGE_MSG = "must be a finite number within ±3.4e38 (the models compute in 32-bit floats)"


@dataclass(frozen=True)
class Problem:
    loc: tuple[str | int, ...]
    msg: str
    type: str

    def as_dict(self) -> dict[str, Any]:
        return {"loc": list(self.loc), "msg": self.msg, "type": self.type}


class InvalidRequest(Exception):
    """A request the model cannot score. ``status`` is 400, or 413 when the batch is too large."""

    def __init__(self, problems: Sequence[Problem], status: int = 400):
        self.problems = tuple(problems[:MAX_PROBLEMS])
        self.total = len(problems)
        self.status = status
        first = self.problems[0]
        where = ".".join(str(p) for p in first.loc) or "body"
        more = f" (and {self.total - 1} more)" if self.total > 1 else ""
        super().__init__(f"{where}: {first.msg}{more}")

    def body(self) -> dict[str, Any]:
        code = ErrorCode.TOO_LARGE if self.status == 413 else ErrorCode.INVALID_REQUEST
        return {"code": code.value, "error": f"invalid request: {self}", "detail": [p.as_dict() for p in self.problems]}


@dataclass(frozen=True)
class FeatureSchema:
    """Ordered feature names and their MLflow types."""

    names: tuple[str, ...]
    types: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.types):
            raise ValueError("names and types differ in length")
        unsupported = {n: t for n, t in zip(self.names, self.types, strict=True) if t not in SUPPORTED_TYPES}
        if unsupported:
            raise ValueError(f"unsupported column types in the model signature: {unsupported}")

    @property
    def index(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.names)}

    @classmethod
    def from_columns(cls, columns: Sequence[tuple[str, str]]) -> FeatureSchema:
        return cls(tuple(n for n, _ in columns), tuple(t for _, t in columns))


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", str: "string", dict: "object", list: "array"}.get(type(value), type(value).__name__)


def _number_text(value: float) -> str:
    """A number as the client can recognise it, at most ~30 characters (JSON allows 10^4000-digit integers)."""
    if type(value) is int and abs(value) > 10**20:
        return f"an integer of {len(str(abs(value)))} digits"
    return repr(value)


def _check_value(value: object, kind: str, loc: tuple[str | int, ...], out: list[Problem]) -> None:
    if kind in FLOAT_TYPES:
        if type(value) is float or type(value) is int:
            if not -MAX_ABS <= value <= MAX_ABS:  # also False for NaN
                out.append(Problem(loc, f"{RANGE_MSG}, got {_number_text(value)}", "finite_number"))
            return
        out.append(Problem(loc, f"must be a number, got {_type_name(value)}", "number_type"))
    elif kind in INT_TYPES:
        if type(value) is int or (type(value) is float and math.isfinite(value) and value.is_integer()):
            if not -MAX_ABS <= value <= MAX_ABS:
                out.append(Problem(loc, f"{RANGE_MSG}, got {_number_text(value)}", "finite_number"))
            return
        out.append(Problem(loc, f"must be an integer, got {_type_name(value)} {value!r}"[:200], "int_type"))
    elif type(value) is not bool:
        out.append(Problem(loc, f"must be true or false, got {_type_name(value)}", "bool_type"))


def row_problems(features: Mapping[str, Any], schema: FeatureSchema, loc: tuple[str | int, ...] = ("features",),
                 out: list[Problem] | None = None) -> list[Problem]:
    """Every problem of one row: unknown names, missing names, mistyped or non-finite values."""
    out = [] if out is None else out
    if not isinstance(features, Mapping):
        out.append(Problem(loc, f"must be an object of feature values, got {_type_name(features)}", "dict_type"))
        return out
    index = schema.index
    for name in features:
        if name not in index:
            out.append(Problem((*loc, name), "unknown feature (not in the model signature)", "unknown_feature"))
    for name, kind in zip(schema.names, schema.types, strict=True):
        if name not in features:
            out.append(Problem((*loc, name), f"missing feature (the model needs it, type {kind})", "missing_feature"))
        else:
            _check_value(features[name], kind, (*loc, name), out)
    return out


def check_batch_size(n_rows: int, max_rows: int, loc: tuple[str | int, ...] = ("rows",)) -> None:
    if n_rows == 0:
        raise InvalidRequest([Problem(loc, "empty batch: send at least one row", "too_short")])
    if n_rows > max_rows:
        raise InvalidRequest([Problem(loc, f"batch of {n_rows} rows exceeds the limit of {max_rows}", "too_long")],
                             status=413)


def _fast_row_ok(features: Mapping[str, Any], schema: FeatureSchema) -> bool:
    """True when a row certainly passes (all floats/ints within `MAX_ABS`, exactly the schema's names)."""
    if len(features) != len(schema.names):
        return False
    try:
        values = [features[n] for n in schema.names]
    except (KeyError, TypeError):
        return False
    if not all(t in FLOAT_TYPES for t in schema.types):
        return False
    for v in values:
        tv = type(v)
        if (tv is not float and tv is not int) or not -MAX_ABS <= v <= MAX_ABS:  # NaN/inf compare False
            return False
    return True


def row_vector(features: Mapping[str, Any], schema: FeatureSchema) -> npt.NDArray[np.float64]:
    """One validated row as a (1, n_features) float64 matrix in model order, or `InvalidRequest`."""
    if not (isinstance(features, Mapping) and _fast_row_ok(features, schema)):
        problems = row_problems(features, schema)
        if problems:
            raise InvalidRequest(problems)
    return np.array([[float(features[n]) for n in schema.names]], dtype=np.float64)


def rows_matrix(rows: Sequence[Mapping[str, Any]], schema: FeatureSchema, max_rows: int) -> npt.NDArray[np.float64]:
    """A validated batch of JSON rows as an (n, n_features) float64 matrix, or `InvalidRequest`."""
    check_batch_size(len(rows), max_rows)
    problems: list[Problem] = []
    names = schema.names
    for i, row in enumerate(rows):
        if not (isinstance(row, Mapping) and _fast_row_ok(row, schema)):
            row_problems(row, schema, ("rows", i), problems)
            if len(problems) >= MAX_PROBLEMS:
                break
    if problems:
        raise InvalidRequest(problems)
    return np.array([[row[n] for n in names] for row in rows], dtype=np.float64)


def table_matrix(table: pa.Table, schema: FeatureSchema, max_rows: int) -> npt.NDArray[np.float32]:
    """A validated Arrow table (one column per feature) as an (n, n_features) float32 matrix."""
    check_batch_size(table.num_rows, max_rows)
    problems: list[Problem] = []
    index = schema.index
    for name in table.column_names:
        if name not in index:
            problems.append(Problem(("columns", name), "unknown feature (not in the model signature)",
                                    "unknown_feature"))
    duplicates = sorted({n for n in table.column_names if table.column_names.count(n) > 1})
    problems += [Problem(("columns", n), "duplicate column name (each feature is one column)", "duplicate_column")
                 for n in duplicates]
    columns: list[npt.NDArray[np.float32]] = []
    for name, kind in zip(schema.names, schema.types, strict=True):
        if name in duplicates:
            continue
        if name not in table.column_names:
            problems.append(Problem(("columns", name), f"missing feature (the model needs it, type {kind})",
                                    "missing_feature"))
            continue
        col = table.column(name)
        t = col.type
        numeric = pa.types.is_floating(t) or pa.types.is_integer(t)
        ok_type = (numeric if kind in FLOAT_TYPES else pa.types.is_integer(t) if kind in INT_TYPES
                   else pa.types.is_boolean(t))
        if not ok_type:
            problems.append(Problem(("columns", name), f"must be a {kind} column, got Arrow type {t}", "column_type"))
            continue
        if col.null_count:
            problems.append(Problem(("columns", name), f"{col.null_count} null value(s)", "null_value"))
            continue
        values = col.to_numpy()
        bad = ~(np.abs(values) <= MAX_ABS)  # NaN, inf, and finite doubles beyond float32 (same rule as JSON)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            problems.append(Problem(("columns", name, first),
                                    f"{int(bad.sum())} value(s) not {RANGE_MSG.removeprefix('must be ')}, first at "
                                    f"row {first}: {_number_text(values[first].item())}", "finite_number"))
            continue
        columns.append(values.astype(np.float32, copy=False))
    if problems:
        raise InvalidRequest(problems)
    return np.column_stack(columns)
