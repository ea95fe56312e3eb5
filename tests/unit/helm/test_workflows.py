"""The GitHub workflows: actionlint and zizmor (both real, offline) find nothing, and the release
workflow keeps the rules a release pipeline needs (pinned actions, least privilege, no expression
in a shell line, credentials not persisted, the repository's own scripts doing the work)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:  # not a skip: .ci/test installs both (.ci/tools, pyproject's dev extra)
        pytest.fail(f"{name} is not on PATH (source .ci/tools; pip install -e .[dev])")
    return path


def _load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return dict(doc)


def test_actionlint_finds_nothing() -> None:
    proc = subprocess.run([_tool("actionlint"), "-no-color", *map(str, WORKFLOWS)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_zizmor_finds_nothing_even_as_an_auditor() -> None:
    proc = subprocess.run([_tool("zizmor"), "--offline", "--persona=auditor", "--no-progress", "--format=plain",
                           str(ROOT / ".github" / "workflows")], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No findings to report" in proc.stdout + proc.stderr


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_hygiene(path: Path) -> None:
    doc = _load(path)
    assert doc["permissions"] == {}, "no default token permissions; each job asks for what it needs"
    lines = path.read_text().splitlines()
    for name, job in doc["jobs"].items():
        assert "permissions" in job, name
        for step in job["steps"]:
            if "uses" in step:
                assert PINNED.match(step["uses"]), f"{step['uses']}: pin actions to a full commit SHA"
                line = next(line for line in lines if step["uses"] in line)
                assert re.search(r"# v\d+\.\d+\.\d+$", line), f"{step['uses']}: name the version in a comment"
                if step["uses"].startswith("actions/checkout@"):
                    assert step["with"]["persist-credentials"] is False
            assert "${{" not in step.get("run", ""), f"{name}: pass expressions through env:, not into run:"


def test_the_release_runs_on_version_tags_and_uses_the_repository_scripts() -> None:
    doc = _load(ROOT / ".github" / "workflows" / "release.yml")
    assert doc["on"] == {"push": {"tags": ["v*"]}}
    images, deploy = doc["jobs"]["images"], doc["jobs"]["deploy"]
    assert images["permissions"] == {"contents": "read", "packages": "write"}
    assert deploy["permissions"] == {"contents": "read"} and deploy["needs"] == "images"
    runs = "\n".join(s.get("run", "") for job in (images, deploy) for s in job["steps"])
    assert "bash .ci/images --version" in runs and "--push" in runs
    assert "python3 .ci/deploy --version" in runs and "bash .ci/tools helm kubectl" in runs
    assert doc["concurrency"]["cancel-in-progress"] is False


def test_the_retrain_workflow_runs_weekly_with_credentials_by_reference() -> None:
    doc = _load(ROOT / ".github" / "workflows" / "retrain.yml")
    assert doc["on"]["schedule"] == [{"cron": "17 3 * * 1"}] and "workflow_dispatch" in doc["on"]
    job = doc["jobs"]["retrain"]
    assert job["permissions"] == {"contents": "read"} and doc["concurrency"]["cancel-in-progress"] is False
    for key in ("MLFLOW_TRACKING_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert job["env"][key] == f"${{{{ secrets.{key} }}}}", key
    runs = [s["run"] for s in job["steps"] if "run" in s]
    assert runs[-1].startswith("kingmaker retrain --label-delay")
