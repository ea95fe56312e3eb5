"""The HTML report is one self-contained file whose charts and tables say what the result says."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from drift_service.analysis import ArmReference, DriftResult, Policy, Window, analyse
from drift_service.report import render
from kingmaker.drift_result import Context
from kingmaker.roles import Arm

from .conftest import log_rows, make_reference, normal_frame

CONTEXT = Context(model_name="fraud-detector", champion_version="3", challenger_version="4",
                  reference_source="models:/fraud-detector@champion (version 3, run abc)",
                  predictions_url="/tmp/log", since=datetime(2026, 3, 1, tzinfo=UTC),
                  until=datetime(2026, 3, 2, tzinfo=UTC), created=datetime(2026, 3, 2, 0, 5, tzinfo=UTC))


def _result(rows: int = 3000) -> DriftResult:
    rng = np.random.default_rng(0)
    x = normal_frame(4000, features=4, seed=1)
    x.columns = ["amount", "f01", "<b>weird & name</b>", "f03"]
    ref = make_reference(x)
    live = normal_frame(rows, features=4, seed=2, shift={1: 0.8})
    live.columns = x.columns
    n_chall = rows // 2
    frame = pd.concat([log_rows(live.iloc[n_chall:], version="3", id_prefix="a"),
                       log_rows(live.iloc[:n_chall], arm="challenger", version="4", id_prefix="b",
                                scores=rng.beta(2, 10, n_chall))], ignore_index=True)
    arms = [ArmReference(Arm.CHAMPION, "3", ref), ArmReference(Arm.CHALLENGER, "4", ref)]
    return analyse(Window(frame, None, None, "memory"), ref, arms, Policy(min_rows=1000))


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_report_is_self_contained_with_all_charts() -> None:
    result = _result()
    page = render(result, CONTEXT)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from elsewhere
    assert "<script" not in page
    images = _images(page)
    # PSI bar chart + score panels + one histogram per feature
    assert len(images) == 1 + 1 + len(result.features)
    assert all(img.startswith(b"\x89PNG\r\n\x1a\n") for img in images)
    assert page.count("<img") == len(images)


def test_report_states_the_verdict_and_escapes_names() -> None:
    result = _result()
    page = render(result, CONTEXT)
    assert f">{result.severity.value}</span>" in page
    assert "&lt;b&gt;weird &amp; name&lt;/b&gt;" in page and "<b>weird" not in page
    assert "champion v3 vs challenger v4" in page
    assert "fraud-detector: champion v3, challenger v4" in page
    assert "2026-03-01 00:00 – 2026-03-02 00:00 UTC" in page
    f01 = next(f for f in result.features if f.name == "f01")
    assert f01.psi is not None and f"{f01.psi.score:.4f}" in page
    # the worst feature comes first in the table
    table = page[page.index("<h2>All features</h2>"):]
    assert table.index(">f01<") < table.index(">amount<")


def test_report_of_an_insufficient_window_renders_without_charts_of_features() -> None:
    result = _result(rows=500)
    page = render(result, CONTEXT)
    assert ">insufficient data</span>" in page
    assert "No feature had enough data for PSI." in page
    assert "No arm had enough scored rows to draw." in page
    assert len(_images(page)) == 0
