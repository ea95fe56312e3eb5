"""Settings (`kingmaker.settings`): each field's ``metadata["env"]`` is what `from_env` reads, and the same
metadata is the "environment:" section of each command's ``--help``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pytest

from kingmaker.cli import main
from kingmaker.errors import PermanentError
from kingmaker.settings import (
    ControllerSettings,
    DriftSettings,
    FsyncPolicy,
    LogSettings,
    MlflowSettings,
    ServingSettings,
    _doc,
    environment_help,
    read_env,
)

SETTINGS = (MlflowSettings, LogSettings, DriftSettings, ControllerSettings, ServingSettings)
SENTINELS: dict[str, Any] = {"str": "x-sentinel", "str | None": "x-sentinel", "int": 7, "float": 0.5,
                             "Path | None": Path("/x/sentinel"), "tuple[str, ...]": ("a", "b"),
                             "FsyncPolicy": FsyncPolicy.ALWAYS}


def _raw(value: Any) -> str:
    return ",".join(value) if isinstance(value, tuple) else str(value)


@pytest.mark.parametrize("cls", SETTINGS, ids=lambda c: c.__name__)
def test_from_env_reads_every_variable_the_fields_declare(cls: Any, monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    declared = [f for f in fields(cls) if "env" in f.metadata]
    assert declared, f"{cls.__name__} reads no environment variable"
    for f in declared:
        monkeypatch.setenv(f.metadata["env"], _raw(SENTINELS[str(f.type)]))
    settings = cls.from_env(tmp_path) if cls in (MlflowSettings, LogSettings) else cls.from_env()
    for f in declared:
        assert getattr(settings, f.name) == SENTINELS[str(f.type)], f.metadata["env"]


@pytest.mark.parametrize("cls", SETTINGS, ids=lambda c: c.__name__)
def test_every_field_has_a_one_line_doc(cls: Any) -> None:
    for f in fields(cls):
        doc = f.metadata.get("doc", "")
        assert doc and "\n" not in doc, f"{cls.__name__}.{f.name}"
        assert re.fullmatch(r"(KINGMAKER|MLFLOW)_[A-Z_]+", f.metadata.get("env", "KINGMAKER_X"))


def test_defaults_without_an_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for cls in SETTINGS:
        for f in fields(cls):
            if "env" in f.metadata:
                monkeypatch.delenv(f.metadata["env"], raising=False)
    assert MlflowSettings.from_env(tmp_path).tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    assert LogSettings.from_env(tmp_path).labels_url == str(tmp_path / "logs" / "labels")
    drift = DriftSettings.from_env()
    assert (drift.output_dir, drift.window, drift.pushgateway_url) == (None, "24h", None)
    assert drift.results_dir(tmp_path) == tmp_path / "drift"
    assert drift.run_dir(tmp_path, "20260101T000000Z") == tmp_path / "drift" / "20260101T000000Z"
    assert ServingSettings.from_env() == ServingSettings()


def test_one_folder_for_the_drift_job_and_the_controller(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KINGMAKER_DRIFT_OUTPUT_DIR", str(tmp_path / "shared"))
    drift = DriftSettings.from_env()
    assert drift.run_dir(tmp_path, "20260101T000000Z") == drift.results_dir(tmp_path) == tmp_path / "shared"


def test_empty_is_unset_unless_the_field_says_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KINGMAKER_CHALLENGER_URL", "")  # '' = no challenger
    monkeypatch.setenv("KINGMAKER_CHAMPION_URL", "")
    monkeypatch.setenv("KINGMAKER_MAX_BATCH_ROWS", "")
    monkeypatch.setenv("KINGMAKER_PROMETHEUS_URL", "")
    serving = ServingSettings.from_env()
    assert serving.challenger_url == "" and serving.champion_url == "http://127.0.0.1:3001"
    assert serving.max_batch_rows == 10_000 and ControllerSettings.from_env().prometheus_url is None
    monkeypatch.setenv("KINGMAKER_FEEDBACK_TOKEN", " a, ,b ")
    assert ServingSettings.from_env(max_batch_rows=5).feedback_tokens == ("a", "b")  # overrides win too
    assert ServingSettings.from_env(max_batch_rows=5).max_batch_rows == 5


def test_a_bad_number_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KINGMAKER_LOG_FLUSH_SECONDS", "soon")
    with pytest.raises(PermanentError, match=r"^KINGMAKER_LOG_FLUSH_SECONDS='soon' is not a valid float$"):
        ServingSettings.from_env()


def test_a_closed_set_names_its_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KINGMAKER_LOG_FSYNC", "sometimes")
    with pytest.raises(PermanentError, match=r"^KINGMAKER_LOG_FSYNC='sometimes' is not one of never, interval, always$"):
        ServingSettings.from_env()


@dataclass(frozen=True)
class Toy:
    """Exercises every rule of `environment_help`."""

    url: str = field(default="http://x", metadata=_doc("where it is", "KINGMAKER_TOY_URL"))
    rows: int = field(default=3, metadata=_doc("how many (default: all of them)", "KINGMAKER_TOY_ROWS"))
    path: Path | None = field(default=None, metadata=_doc("a folder " + "and more words " * 8, "KINGMAKER_TOY_DIR"))
    internal: str = field(default="y", metadata=_doc("not from the environment"))


def test_environment_help_lists_variables_docs_and_defaults() -> None:
    assert read_env(Toy) == {}
    text = environment_help(Toy, (LogSettings, "labels_url"), Toy, width=70)
    assert max(len(line) for line in text.splitlines()) <= 70
    assert text.splitlines() == [
        "environment (command-line options win):",
        "  KINGMAKER_HOME        data folder of the embedded defaults: MLflow",
        "                        SQLite store, logs, serving and controller",
        "                        files (default: ./.kingmaker)",
        "  KINGMAKER_TOY_URL     where it is (default: http://x)",
        "  KINGMAKER_TOY_ROWS    how many (default: all of them)",
        "  KINGMAKER_TOY_DIR     a folder and more words and more words and",
        "                        more words and more words and more words and",
        "                        more words and more words and more words",
        "  KINGMAKER_LABELS_URL  label log dataset, a folder or fsspec URL",
        "                        (default: logs/labels in the data folder)",
    ]


@pytest.mark.parametrize("command", ["train", "drift", "promote"])
def test_help_lists_every_variable_its_options_mention(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    options, _, environment = text.partition("\nenvironment (command-line options win):\n")
    listed = set(re.findall(r"^  ((?:KINGMAKER|MLFLOW)_[A-Z_]+) ", environment, re.MULTILINE))
    assert {"KINGMAKER_HOME", "MLFLOW_TRACKING_URI", "KINGMAKER_MODEL_NAME"} <= listed
    assert set(re.findall(r"\$((?:KINGMAKER|MLFLOW)_[A-Z_]+)", options)) <= listed
