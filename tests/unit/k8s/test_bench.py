"""`kingmaker bench promotion` end to end on a tiny configuration: numbers and the plot are written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kingmaker.cli import BENCHMARKS, main


def test_the_benchmark_is_registered() -> None:
    assert BENCHMARKS["promotion"][0] == "k8s.bench"


def test_a_tiny_run_writes_numbers_and_a_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--log-level", "WARNING", "bench", "promotion", "--runs", "4", "--transactions", "3000",
                 "--look-every", "500", "--out", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "promotion.json").read_text())
    assert report["runs"] == 4 and report["alpha"] == 0.05
    cells = report["cells"]
    assert {"aa_shadow", "aa_split", "power_shadow", "power_split"} <= set(cells)
    for cell in cells.values():
        assert cell["promoted"] + cell["rolled_back"] + cell["held_to_the_end"] == pytest.approx(1.0)
    assert cells["power_shadow"]["challenger_cost_per_1k"] == pytest.approx(
        0.9 * cells["power_shadow"]["champion_cost_per_1k"])
    png = tmp_path / "promotion-power.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in capsys.readouterr().out
