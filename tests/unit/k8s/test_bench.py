"""`kingmaker bench promotion` end to end on a tiny configuration: numbers and the plot are written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from k8s.bench import labels_for_power
from k8s.simulate import CONSTANT_BETS
from kingmaker.cli import BENCHMARKS, main


def test_the_benchmark_is_registered() -> None:
    assert BENCHMARKS["promotion"][0] == "k8s.bench"


def test_a_tiny_run_writes_numbers_and_a_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--log-level", "WARNING", "bench", "promotion", "--runs", "4", "--transactions", "3000",
                 "--look-every", "500", "--real-runs", "0", "--out", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "promotion.json").read_text())
    assert report["runs"] == 4 and report["alpha"] == 0.05
    cells = report["cells"]
    assert {"aa_shadow", "aa_split", "power_shadow", "power_split"} <= set(cells)
    for cell in cells.values():
        assert cell["promoted"] + cell["rolled_back"] + cell["held_to_the_end"] == pytest.approx(1.0)
    assert all(set(cell["constant_bets_promoted_at_horizon"]) == {f"{bet:g}" for bet in CONSTANT_BETS}
               for cell in cells.values())
    assert cells["power_shadow"]["challenger_cost_per_1k"] == pytest.approx(
        0.9 * cells["power_shadow"]["champion_cost_per_1k"])
    png = tmp_path / "promotion-power.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in capsys.readouterr().out


def _fake_real_scores(path: Path) -> Path:
    """Stand-in for the credit-card replay cache (k8s.replay): 20,000 rows, 2 % fraud, two models."""
    rng = np.random.default_rng(0)
    labels = rng.random(20_000) < 0.02
    shared = rng.standard_normal(20_000)
    np.savez(path, labels=labels, amounts=rng.lognormal(3, 1, 20_000),
             xgboost=3.0 * labels + shared - 5, xgboost2=3.0 * labels + 0.9 * shared + 0.4 * rng.standard_normal(20_000) - 5)
    return path


def test_quick_run_covers_every_mode_on_synthetic_and_replayed_data(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    scores = _fake_real_scores(tmp_path / "scores.npz")
    assert main(["--log-level", "WARNING", "bench", "promotion", "--quick", "--real-scores", str(scores),
                 "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "promotion.json").read_text())
    cells = report["cells"]
    for data, runs, n in (("synthetic", 6, 4000), ("real", 4, 6000)):
        prefix = "" if data == "synthetic" else "real_"
        for kind in ("aa", "power"):
            modes = {cells[name]["mode"] for name in cells if name.startswith(f"{prefix}{kind}_")
                     and cells[name]["data"] == data and cells[name]["challenger_weight"] == 0.1}
            assert {"shadow", "split", "paired split"} <= modes, (data, kind, modes)
        some = next(c for name, c in cells.items() if c["data"] == data)
        assert (some["runs"], some["transactions"]) == (runs, n)
    assert cells["real_aa_shadow"]["effect"] == pytest.approx(0.0, abs=0.05)
    assert cells["real_power_shadow_noise3.5"]["effect"] > 0  # noise makes the champion worse
    assert cells["real_power_shadow_noise3.5"]["alert_rate"] == 0.003
    model = cells["real_power_shadow_noise3.5"]["sign_model"]
    assert model["discordant_per_1k"] > 0 and 0 <= model["win_share"] <= 1
    assert cells["real_power_split_noise3.5"]["sign_model"] is None  # block means, not signs
    assert cells["real_aa_shadow"]["sign_model"] is None
    assert cells["real_power_shadow_noise3.5_planned"]["sign_model"] is None  # the same gains as unplanned
    table = capsys.readouterr().out
    assert "| real | paired split 90/10 |" in table and "| synthetic | shadow |" in table
    assert "| shadow | " in table.split("| sign model: no valid test below |")[1]


def test_labels_for_power_interpolates_between_looks() -> None:
    looks = np.array([500, 1000, 1500])
    assert labels_for_power([0.5, 0.7, 0.9], looks) == pytest.approx(1250.0)
    assert labels_for_power([0.85, 0.9, 0.95], looks) == 500.0
    assert labels_for_power([0.1, 0.2, 0.3], looks) is None


def test_the_readme_table_puts_the_hindsight_floor_next_to_the_test() -> None:
    from k8s.bench import readme_table

    row = {"data": "real", "mode": "shadow", "challenger_weight": 0.1, "criterion": "expected-cost",
           "amount_based_cost": False, "effect": 0.233, "planned_labels": 44_000, "promoted_by_50000": 0.46,
           "promoted": 0.99, "transactions": 150_000, "median_transactions_to_promotion": 52_500,
           "labels_for_80pct_power": 74_000, "z_test_labels_for_80pct_power": 44_000, "ratio_to_z_test": 74 / 44,
           "ratio_to_z_test_95pct": [1.6, None], "best_constant_bet": 0.9, "best_constant_bet_ratio_to_z_test": 1.55,
           "rolled_back": 0.0}
    line = readme_table({"real_power_shadow_noise3.5_planned": row}).splitlines()[-1]
    assert line == ("| real | shadow | 23.3% | 44,000 | 46.0% | 99.0% of 150,000 | 52,500 | 74,000 / 44,000 "
                    "(1.68x; 95 % CI 1.60–beyond the horizon) | 1.55x (bet 0.9) | 0.0% |")


def test_the_frontier_table_reads_the_sign_model_next_to_the_measured_ratios() -> None:
    from k8s.bench import frontier_table

    unplanned = {"mode": "paired split", "effect": 0.233, "planned_labels": None,
                 "best_constant_bet_labels_for_80pct_power": 66_000, "z_test_labels_for_80pct_power": 47_000,
                 "sign_model": {"discordant_per_1k": 0.121, "win_share": 0.966, "z_test_labels": 43_400,
                                "constant_bet_labels": 66_900, "constant_bet": 0.9, "any_test_labels": 62_200}}
    planned = {**unplanned, "planned_labels": 47_000, "labels_for_80pct_power": 72_000, "sign_model": None}
    table = frontier_table({"real_power_paired_split_noise3.5": unplanned,
                            "real_power_paired_split_noise3.5_planned": planned, "power_shadow": {"sign_model": None}})
    assert table.splitlines()[2:] == [
        "| paired split 90/10 | 23.3% | 0.121 | 96.6% | 1.54x (bet 0.9) | 1.43x | 1.53x | 1.40x |"]


def test_the_ratio_interval_collapses_when_every_run_is_alike() -> None:
    from k8s.bench import ratio_interval

    looks = np.array([500, 1000, 1500])
    # every run promotes at 1,000 and every z-test rejects from the first look: 80 % power is reached at
    # 500 + 0.8 * 500 = 900 labels (interpolated), the z-test's at 500, so every resample reads 1.8
    lo, hi = ratio_interval(np.full(50, 1000.0), np.ones((50, 3), dtype=bool), looks)
    assert lo == pytest.approx(1.8) and hi == pytest.approx(1.8)


def test_the_ratio_interval_is_open_above_when_many_resamples_miss_80_percent() -> None:
    from k8s.bench import ratio_interval

    looks = np.array([500, 1000, 1500])
    z = np.ones((40, 3), dtype=bool)
    # 82.5 % of runs promote at 1,000, the rest never: the point estimate is (500 + 0.8 / 0.825 * 500) / 500
    # = 1.97, but about a third of the resamples stay below 80 % power within the horizon
    at = np.where(np.arange(40) < 33, 1000.0, np.inf)
    lo, hi = ratio_interval(at, z, looks)
    assert lo is not None and 1.8 < lo < 1.97 and hi is None
    # with every run promoted by 1,500 and a spread of times, the interval has width and holds the estimate
    at = np.where(np.arange(40) < 30, 1000.0, 1500.0)
    lo, hi = ratio_interval(at, z, looks)
    assert lo is not None and hi is not None and lo < labels_for_power([0.0, 0.75, 1.0], looks) / 500 < hi
