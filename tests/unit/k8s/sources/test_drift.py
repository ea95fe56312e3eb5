"""The latest drift result from drift.json, written by the drift job's own code (drift_service.job.write) and
read through the shared format (kingmaker.drift_result)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from drift_service.analysis import ArmReference, Policy, Window, analyse
from drift_service.job import write
from k8s.sources.drift import FileDrift
from k8s.state import Pair
from kingmaker import reference
from kingmaker.drift_result import Context
from kingmaker.roles import Arm

from ..conftest import MODEL, traffic_frame

CREATED = datetime(2026, 11, 2, tzinfo=UTC)


def drift_result(folder: Path, *, champion: str = "1", challenger: str = "2", created: datetime = CREATED,
                 separations: tuple[float, float] = (2.5, 2.5)) -> Path:
    preds, _ = traffic_frame(3000, champion=champion, challenger=challenger, separations=separations)
    champ = preds[preds["arm"] == "champion"]
    rng = np.random.default_rng(0)
    sample = champ[["feat_amount", "feat_f1"]].rename(columns=lambda c: c.removeprefix("feat_")).reset_index(drop=True)
    ref = reference.build(sample, champ["score"].to_numpy() + rng.normal(0, 1e-3, len(champ)), ["amount", "f1"])
    window = Window(frame=preds.reset_index(drop=True), since=None, until=created, source="test")
    arms = [ArmReference(Arm.CHAMPION, champion, ref), ArmReference(Arm.CHALLENGER, challenger, None)]
    result = analyse(window, ref, arms, Policy(min_rows=500), workers=1)
    context = Context(model_name=MODEL, champion_version=champion, challenger_version=challenger,
                      reference_source="test", predictions_url="test", since=None, until=created, created=created)
    json_path, _ = write(result, context, folder)
    return json_path


def test_reads_the_arms_score_psi_of_the_pair(tmp_path: Path) -> None:
    path = drift_result(tmp_path / "run-1")
    doc = json.loads(path.read_text())
    summary = FileDrift(tmp_path, max_age_seconds=None).latest(Pair("1", "2"), now=CREATED.timestamp() + 60)
    assert summary is not None
    assert summary.score_psi == pytest.approx(doc["arms"]["psi"]["score"])
    assert summary.computed_at == pytest.approx(CREATED.timestamp())
    assert summary.drifted_features == tuple(doc["drifted_features"])


def test_a_very_different_challenger_shows_a_large_psi(tmp_path: Path) -> None:
    drift_result(tmp_path / "same")
    same = FileDrift(tmp_path / "same", None).latest(Pair("1", "2"), CREATED.timestamp())
    drift_result(tmp_path / "apart", separations=(0.5, 6.0))
    apart = FileDrift(tmp_path / "apart", None).latest(Pair("1", "2"), CREATED.timestamp())
    assert same is not None and apart is not None and same.score_psi is not None and apart.score_psi is not None
    assert apart.score_psi > same.score_psi


def test_the_newest_result_wins_and_other_pairs_or_stale_ones_give_no_psi(tmp_path: Path) -> None:
    drift_result(tmp_path / "old", created=CREATED - timedelta(days=1))
    drift_result(tmp_path / "new", challenger="3", created=CREATED)
    drift = FileDrift(tmp_path, max_age_seconds=3600)
    latest = drift.latest(Pair("1", "2"), now=CREATED.timestamp() + 60)
    assert latest is not None and latest.score_psi is None  # newest compared v3, not v2
    assert drift.latest(Pair("1", "3"), now=CREATED.timestamp() + 60).score_psi is not None  # type: ignore[union-attr]
    stale = drift.latest(Pair("1", "3"), now=CREATED.timestamp() + 7200)
    assert stale is not None and stale.score_psi is None


def test_no_result_or_a_broken_one(tmp_path: Path) -> None:
    assert FileDrift(tmp_path / "nowhere").latest(Pair("1", "2"), 0.0) is None
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "drift.json").write_text("{not json")
    assert FileDrift(tmp_path).latest(Pair("1", "2"), 0.0) is None


def test_a_result_in_a_format_it_does_not_read_is_skipped_with_a_warning(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    drift_result(tmp_path / "old", created=CREATED - timedelta(hours=1))
    newer = drift_result(tmp_path / "new", challenger="3", created=CREATED)
    newer.write_text(json.dumps({**json.loads(newer.read_text()), "format": 2}))
    latest = FileDrift(tmp_path, max_age_seconds=None).latest(Pair("1", "2"), now=CREATED.timestamp())
    assert latest is not None and latest.score_psi is not None  # the older run, of the pair under test
    assert latest.computed_at == pytest.approx((CREATED - timedelta(hours=1)).timestamp())
    assert "drift result format 2 is newer than this kingmaker reads (1)" in caplog.text
