"""drift.json (`kingmaker.drift_result`): what the writer writes the reader reads back, and the reader refuses,
in one line naming the field, a version it does not know and a document that does not fit the format."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from kingmaker import drift_result as fmt
from kingmaker.errors import PermanentError

CREATED = datetime(2026, 11, 2, 12, 30, tzinfo=UTC)
PSI = fmt.Psi(statistic="psi", score=0.31, threshold=0.1, severe_threshold=0.25, severity="severe", drifted=True,
              n_reference=1000, n_current=800, bins=("(-inf, 0)", "[0, inf)"), reference_share=(0.5, 0.5),
              current_share=(0.2, 0.8))
KS = fmt.Ks(d=0.2, p_value=1e-9, p_adjusted=None, threshold=0.05, drifted=True, n_reference=1000, n_current=800)
DOCUMENT = fmt.DriftDocument(
    context=fmt.Context(model_name="fraud-detector", champion_version="1", challenger_version="2",
                        reference_source="models:/fraud-detector@champion", predictions_url="/logs",
                        since=CREATED - timedelta(hours=24), until=None,
                        created=CREATED.astimezone(timezone(timedelta(hours=2)))),
    severity="severe", rows=800, rows_by_arm={"champion": 800, "challenger": 800}, drifted_features=("amount",),
    policy={"psi_moderate": 0.1, "correction": "bh", "min_rows": 500},
    features=(fmt.Feature(name="amount", kind="numeric", severity="severe", drifted=True, n_reference=1000,
                          n_current=800, n_missing=0, psi=PSI, ks=KS),
              fmt.Feature(name="country", kind="categorical", severity="insufficient_data", drifted=False,
                          n_reference=1000, n_current=3, n_missing=0, psi=None, ks=None)),
    scores=(fmt.Score(arm="champion", model_version="1", severity="none", n_reference=1000, n_current=800,
                      psi=PSI, ks=KS),),
    arms=fmt.Arms(champion_version="1", challenger_version="2", severity="severe", n_champion=800,
                  n_challenger=800, psi=PSI, ks=KS),
)


def written(tmp_path: Path) -> dict[str, Any]:
    return dict(json.loads(fmt.write(DOCUMENT, tmp_path).read_text()))


def test_what_is_written_reads_back_equal(tmp_path: Path) -> None:
    path = fmt.write(DOCUMENT, tmp_path / "run")
    assert path == tmp_path / "run" / "drift.json"
    raw = json.loads(path.read_text())
    assert list(raw)[:2] == ["format", "context"] and raw["format"] == fmt.FORMAT_VERSION == 1
    assert raw["context"]["created"] == "2026-11-02T14:30:00+02:00" and raw["context"]["until"] is None
    assert raw["arms"]["psi"]["bins"] == ["(-inf, 0)", "[0, inf)"] and raw["features"][1]["psi"] is None
    assert fmt.read(path) == DOCUMENT
    assert fmt.read(path).score_psi == 0.31


def test_score_psi_is_missing_without_an_arm_comparison() -> None:
    assert fmt.DriftDocument(**{**DOCUMENT.__dict__, "arms": None}).score_psi is None


def test_a_newer_format_is_refused_with_one_line(tmp_path: Path) -> None:
    raw = written(tmp_path)
    with pytest.raises(PermanentError, match=r"^x.json: drift result format 2 is newer than this kingmaker reads \(1\)"):
        fmt.from_json({**raw, "format": 2}, source="x.json")
    for version in (None, 0, "1", True):
        with pytest.raises(PermanentError, match=r"unknown drift result format"):
            fmt.from_json({**raw, "format": version})


@pytest.mark.parametrize(("path", "value", "message"), [
    (("context", "created"), "yesterday", "context.created: expected an ISO 8601 time, got 'yesterday'"),
    (("context", "model_name"), 3, "context.model_name: expected str, got 3"),
    (("rows",), 12.5, "rows: expected int, got 12.5"),
    (("rows",), True, "rows: expected int, got True"),
    (("arms", "psi", "score"), "0.3", "arms.psi.score: expected a finite number, got '0.3'"),
    (("arms", "psi", "score"), float("nan"), "arms.psi.score: expected a finite number, got nan"),
    (("features", 0, "psi", "current_share", 1), None, r"features\[0\].psi.current_share\[1\]: expected a finite"),
    (("drifted_features",), "amount", "drifted_features: expected a list, got 'amount'"),
    (("rows_by_arm",), [], "rows_by_arm: expected a mapping, got \\[\\]"),
    (("policy", "alpha"), [0.05], r"policy.alpha: expected a number or a string, got \[0.05\]"),
])
def test_a_document_that_does_not_fit_names_the_field(tmp_path: Path, path: tuple[Any, ...], value: Any,
                                                      message: str) -> None:
    raw = copy.deepcopy(written(tmp_path))
    target = raw
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(PermanentError, match=f"^drift.json: {message}"):
        fmt.from_json(raw)


def test_missing_fields_are_named_and_extra_ones_ignored(tmp_path: Path) -> None:
    raw = written(tmp_path)
    del raw["arms"]["challenger_version"]
    with pytest.raises(PermanentError, match=r"^drift.json: arms.challenger_version: required$"):
        fmt.from_json(raw)
    assert fmt.from_json({**written(tmp_path), "comment": "added by hand"}) == DOCUMENT


def test_unreadable_files_are_permanent_errors(tmp_path: Path) -> None:
    (tmp_path / "drift.json").write_text("{not json")
    with pytest.raises(PermanentError, match="cannot be read"):
        fmt.read(tmp_path / "drift.json")
    with pytest.raises(PermanentError, match="cannot be read"):
        fmt.read(tmp_path / "missing.json")
    with pytest.raises(PermanentError, match="expected a JSON object, got list"):
        fmt.from_json([])
