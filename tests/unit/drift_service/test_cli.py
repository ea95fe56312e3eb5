"""`kingmaker drift` without MLflow (a reference folder, --no-mlflow-log): exit codes and outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kingmaker import reference
from kingmaker.cli import main
from kingmaker.logs import append_predictions

from .conftest import log_rows, make_reference, normal_frame

FEATURES = ["x0", "x1", "x2"]
UNTIL = "2026-03-02T00:00:00+00:00"


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, str]:
    ref_dir = reference.save(make_reference(normal_frame(4000, features=3, seed=1)), tmp_path / "ref")
    url = str(tmp_path / "log")
    live = normal_frame(3000, features=3, seed=2, shift={1: 0.6})
    append_predictions(url, log_rows(live, start="2026-03-01T12:00Z"), FEATURES)
    return ref_dir, url


def _args(ref_dir: Path, url: str, out: Path, *extra: str) -> list[str]:
    return ["drift", "--reference-dir", str(ref_dir), "--predictions-url", url, "--no-mlflow-log",
            "--output-dir", str(out), "--until", UNTIL, *extra]


def test_drift_found_is_a_successful_run(setup: tuple[Path, str], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    ref_dir, url = setup
    assert main(_args(ref_dir, url, tmp_path / "out", "--window", "24h")) == 0
    out = capsys.readouterr().out
    assert out.startswith("drift: severe  (3000 requests")
    assert "x1" in out and "report:" in out
    doc = json.loads((tmp_path / "out" / "drift.json").read_text())
    assert doc["drifted_features"] == ["x1"] and doc["rows"] == 3000
    assert doc["context"]["reference_source"] == str(ref_dir)
    assert (tmp_path / "out" / "report.html").read_text().startswith("<!DOCTYPE html>")


def test_thresholds_from_the_command_line(setup: tuple[Path, str], tmp_path: Path) -> None:
    ref_dir, url = setup
    assert main(_args(ref_dir, url, tmp_path / "out", "--rows", "2500", "--psi-moderate", "0.5",
                      "--psi-severe", "0.9", "--alpha", "0.01", "--correction", "bonferroni")) == 0
    doc = json.loads((tmp_path / "out" / "drift.json").read_text())
    assert doc["rows"] == 2500
    assert doc["policy"] | {"psi_moderate": 0.5, "psi_severe": 0.9, "alpha": 0.01, "correction": "bonferroni"} \
        == doc["policy"]
    x1 = doc["features"][1]
    assert x1["psi"]["score"] < 0.5 and x1["severity"] == "moderate"  # significant, but below the PSI bar


def test_small_window_is_insufficient_data_and_exit_zero(setup: tuple[Path, str], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    ref_dir, url = setup
    assert main(_args(ref_dir, url, tmp_path / "out", "--rows", "400")) == 0
    assert capsys.readouterr().out.startswith("drift: insufficient_data  (400 requests")


@pytest.mark.parametrize(("change", "message"), [
    (["--window", "1h"], "no data: the prediction log at .* has no rows since 2026-03-01 23:00 UTC"),
    (["--predictions-url", "/nonexistent/log"], "no data: the prediction log at /nonexistent/log has no rows"),
    (["--reference-dir", "/nonexistent/ref"], "no reference: /nonexistent/ref lacks bins.json"),
    (["--psi-moderate", "0.5", "--psi-severe", "0.2"], "bad drift thresholds: need 0 < psi_moderate <= psi_severe"),
])
def test_failures_are_one_line_and_exit_2(setup: tuple[Path, str], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str], change: list[str], message: str) -> None:
    import re

    ref_dir, url = setup
    args = _args(ref_dir, url, tmp_path / "out")
    for i in range(0, len(change), 2):
        if change[i] in args:
            args[args.index(change[i]) + 1] = change[i + 1]
        else:
            args += change[i:i + 2]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("kingmaker drift: error: ")
    assert re.search(message, err), err
    assert not (tmp_path / "out" / "drift.json").exists()


@pytest.mark.parametrize("label", ["championchallenger", "9x=1", "job=other", "namespace="])
def test_a_bad_pushgateway_label_is_one_usage_error(setup: tuple[Path, str], tmp_path: Path, label: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    ref_dir, url = setup
    with pytest.raises(SystemExit) as exit_:
        main(_args(ref_dir, url, tmp_path / "out", "--pushgateway-label", label))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument --pushgateway-label:" in err and "Traceback" not in err


def test_bad_reference_file_is_reported(setup: tuple[Path, str], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    ref_dir, url = setup
    (ref_dir / "bins.json").write_text(json.dumps({"format": 99}))
    assert main(_args(ref_dir, url, tmp_path / "out")) == 2
    assert "unreadable drift reference" in capsys.readouterr().err


def test_environment_configures_window_and_output(setup: tuple[Path, str], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    ref_dir, url = setup
    monkeypatch.setenv("KINGMAKER_DRIFT_WINDOW", "11.5h")  # from 12:30; the log spans 12:00-13:00
    monkeypatch.setenv("KINGMAKER_DRIFT_OUTPUT_DIR", str(tmp_path / "env-out"))
    monkeypatch.setenv("KINGMAKER_PREDICTIONS_URL", url)
    assert main(["drift", "--reference-dir", str(ref_dir), "--no-mlflow-log", "--until", UNTIL]) == 0
    doc = json.loads((tmp_path / "env-out" / "drift.json").read_text())
    assert doc["context"]["since"] == "2026-03-01T12:30:00+00:00"
    assert 1200 < doc["rows"] < 1800  # about half of the 3000 rows


def test_help_does_not_import_the_job() -> None:
    """`kingmaker --help` stays fast: building the parser imports no drift machinery."""
    code = ("import sys; from kingmaker.cli import build_parser; build_parser(); "
            "heavy = [m for m in ('drift_service.job', 'drift_service.analysis', 'drift_service.report', "
            "'drift_service.tracking', 'scipy', 'matplotlib') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    heavy = out.stdout.strip()
    assert "drift_service" not in heavy, heavy
