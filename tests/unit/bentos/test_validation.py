"""Request validation against the model signature: every problem names the field and the reason."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from bentos.validation import FeatureSchema, InvalidRequest, row_problems, row_vector, rows_matrix, table_matrix

SCHEMA = FeatureSchema(("amount", "f01", "f02"), ("double", "double", "double"))
GOOD = {"amount": 12.5, "f01": -1.0, "f02": 3}


def problems(features: object, schema: FeatureSchema = SCHEMA) -> list[tuple[tuple[object, ...], str]]:
    return [(p.loc, p.type) for p in row_problems(features, schema)]  # type: ignore[arg-type]


def test_good_row_in_model_order() -> None:
    x = row_vector({"f02": 3, "amount": 12.5, "f01": -1.0}, SCHEMA)
    assert x.shape == (1, 3) and x.dtype == np.float64
    assert x.tolist() == [[12.5, -1.0, 3.0]]
    assert problems(GOOD) == []


@pytest.mark.parametrize(("change", "loc", "kind"), [
    ({"zz": 1.0}, ("features", "zz"), "unknown_feature"),
    ({"f01": "1.5"}, ("features", "f01"), "number_type"),
    ({"f01": True}, ("features", "f01"), "number_type"),
    ({"f01": None}, ("features", "f01"), "number_type"),
    ({"f01": [1.0]}, ("features", "f01"), "number_type"),
    ({"f01": math.nan}, ("features", "f01"), "finite_number"),
    ({"f01": math.inf}, ("features", "f01"), "finite_number"),
    ({"f01": -math.inf}, ("features", "f01"), "finite_number"),
    ({"f01": 10**400}, ("features", "f01"), "finite_number"),
])
def test_one_bad_field_is_named(change: dict[str, object], loc: tuple[str, ...], kind: str) -> None:
    row = {**GOOD, **change}
    assert problems(row) == [(loc, kind)]
    with pytest.raises(InvalidRequest) as err:
        row_vector(row, SCHEMA)
    assert err.value.status == 400
    body = err.value.body()
    assert body["detail"][0]["loc"] == list(loc)
    assert loc[-1] in body["error"]


def test_missing_feature_is_named() -> None:
    assert problems({"amount": 1.0, "f01": 2.0}) == [(("features", "f02"), "missing_feature")]


def test_several_problems_are_all_reported() -> None:
    found = problems({"amount": "x", "zz": 1})
    assert (("features", "zz"), "unknown_feature") in found
    assert (("features", "amount"), "number_type") in found
    assert (("features", "f01"), "missing_feature") in found
    assert (("features", "f02"), "missing_feature") in found


def test_not_an_object() -> None:
    assert problems([1, 2, 3]) == [(("features",), "dict_type")]


def test_integer_and_boolean_columns() -> None:
    schema = FeatureSchema(("n", "flag"), ("long", "boolean"))
    assert problems({"n": 3, "flag": True}, schema) == []
    assert problems({"n": 3.0, "flag": False}, schema) == []  # an integral float is an integer
    assert problems({"n": 3.5, "flag": 1}, schema) == [(("features", "n"), "int_type"), (("features", "flag"), "bool_type")]


def test_unsupported_signature_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        FeatureSchema(("s",), ("string",))


def test_batch_matrix_and_limits() -> None:
    rows = [GOOD, {**GOOD, "f01": 2.0}]
    x = rows_matrix(rows, SCHEMA, max_rows=10)
    assert x.tolist() == [[12.5, -1.0, 3.0], [12.5, 2.0, 3.0]]
    with pytest.raises(InvalidRequest) as err:
        rows_matrix([], SCHEMA, max_rows=10)
    assert err.value.status == 400 and err.value.problems[0].loc == ("rows",)
    with pytest.raises(InvalidRequest) as err:
        rows_matrix([GOOD] * 11, SCHEMA, max_rows=10)
    assert err.value.status == 413 and "limit of 10" in str(err.value)


def test_batch_problems_carry_the_row_index() -> None:
    with pytest.raises(InvalidRequest) as err:
        rows_matrix([GOOD, {**GOOD, "f02": math.nan}, GOOD, {"amount": 1.0}], SCHEMA, max_rows=10)
    locs = [p.loc for p in err.value.problems]
    assert ("rows", 1, "f02") in locs
    assert ("rows", 3, "f01") in locs and ("rows", 3, "f02") in locs


def test_problem_list_is_capped() -> None:
    bad = [{"amount": "x", "f01": "y", "f02": "z"}] * 100
    with pytest.raises(InvalidRequest) as err:
        rows_matrix(bad, SCHEMA, max_rows=1000)
    assert len(err.value.problems) == 20 and err.value.total >= 20


def test_arrow_table_in_model_order() -> None:
    table = pa.table({"f02": [3, 4], "amount": [12.5, 1.0], "f01": pa.array([-1.0, 0.5], pa.float32())})
    x = table_matrix(table, SCHEMA, max_rows=10)
    assert x.dtype == np.float32
    assert x.tolist() == [[12.5, -1.0, 3.0], [1.0, 0.5, 4.0]]


@pytest.mark.parametrize(("table", "loc", "kind"), [
    (pa.table({"amount": [1.0], "f01": [1.0]}), ("columns", "f02"), "missing_feature"),
    (pa.table({"amount": [1.0], "f01": [1.0], "f02": [1.0], "x": [1.0]}), ("columns", "x"), "unknown_feature"),
    (pa.table({"amount": [1.0], "f01": ["a"], "f02": [1.0]}), ("columns", "f01"), "column_type"),
    (pa.table({"amount": [1.0], "f01": [True], "f02": [1.0]}), ("columns", "f01"), "column_type"),
    (pa.table({"amount": [1.0], "f01": pa.array([None], pa.float64()), "f02": [1.0]}), ("columns", "f01"),
     "null_value"),
    (pa.table({"amount": [1.0, 2.0], "f01": [1.0, math.nan], "f02": [1.0, 1.0]}), ("columns", "f01", 1),
     "finite_number"),
])
def test_arrow_problems(table: pa.Table, loc: tuple[object, ...], kind: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        table_matrix(table, SCHEMA, max_rows=10)
    assert [(p.loc, p.type) for p in err.value.problems] == [(loc, kind)]



@pytest.mark.parametrize("value", [1e308, -3.5e38, 10**39])
def test_one_range_rule_for_json_and_arrow(value: float) -> None:
    """Finite doubles beyond float32 used to pass as JSON but fail as Arrow with "NaN/inf": the models compute
    in 32-bit floats, so both paths refuse them, with the same message saying what is wrong."""
    with pytest.raises(InvalidRequest) as json_err:
        row_vector({**GOOD, "f01": value}, SCHEMA)
    with pytest.raises(InvalidRequest) as arrow_err:
        table_matrix(pa.table({"amount": [1.0], "f01": [float(value)], "f02": [1.0]}), SCHEMA, max_rows=10)
    (json_problem,), (arrow_problem,) = json_err.value.problems, arrow_err.value.problems
    assert json_problem.type == arrow_problem.type == "finite_number"
    assert "within ±3.4e38 (the models compute in 32-bit floats)" in json_problem.msg
    assert "within ±3.4e38 (the models compute in 32-bit floats)" in arrow_problem.msg
    assert "NaN/inf" not in arrow_problem.msg
    for edge in (3.4e38, -3.4e38, 0.0):  # the largest float32 magnitudes still pass, on both paths
        assert row_vector({**GOOD, "f01": edge}, SCHEMA)[0, 1] == edge
        assert np.isfinite(table_matrix(pa.table({"amount": [1.0], "f01": [edge], "f02": [1.0]}), SCHEMA, 10)).all()


def test_a_huge_json_integer_is_described_not_echoed() -> None:
    (problem,) = row_problems({**GOOD, "f01": 10**4000}, SCHEMA)
    assert problem.msg.endswith("got an integer of 4001 digits")


def test_arrow_duplicate_column_names_are_a_400_naming_the_column() -> None:
    """pyarrow raises on `table.column(name)` when a name repeats: that used to be a 500."""
    table = pa.Table.from_arrays([pa.array([1.0])] * 4, names=["amount", "f01", "f01", "f02"])
    with pytest.raises(InvalidRequest) as err:
        table_matrix(table, SCHEMA, max_rows=10)
    assert [(p.loc, p.type) for p in err.value.problems] == [(("columns", "f01"), "duplicate_column")]
