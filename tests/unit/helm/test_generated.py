"""One source of truth: the chart's CRD and monitoring copies, its values table (README.md) and the plain
manifests (k8s/rbac.yaml, k8s/manifests, k8s/kustomization.yaml) are what .ci/manifests generates."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, helm_binary

GENERATOR = ROOT / ".ci" / "manifests"


def generate(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(helm_binary()).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([sys.executable, str(GENERATOR), "--root", str(root), *args], capture_output=True,
                          text=True, timeout=120, env=env, check=False)


def test_the_generated_files_are_up_to_date() -> None:
    proc = generate(ROOT, "--check")
    assert proc.returncode == 0, proc.stderr


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """The parts of the repository the generator reads and writes."""
    for part in ("helm", "k8s/crd", "k8s/manifests", "monitoring"):
        if (ROOT / part).exists():
            shutil.copytree(ROOT / part, tmp_path / part)
    for part in ("k8s/rbac.yaml", "k8s/kustomization.yaml"):
        shutil.copy(ROOT / part, tmp_path / part)
    return tmp_path


def test_a_changed_source_makes_the_check_fail_until_regenerated(repo: Path) -> None:
    assert generate(repo, "--check").returncode == 0
    crd = repo / "k8s" / "crd" / "championchallenger.yaml"
    crd.write_text(crd.read_text().replace("shortNames: [cc]", "shortNames: [cc, kmcc]"))
    (repo / "monitoring" / "rules").mkdir(parents=True, exist_ok=True)
    (repo / "monitoring" / "rules" / "extra.yaml").write_text("groups: []\n")
    (repo / "monitoring" / "rules" / "extra_test.yaml").write_text("rule_files: [extra.yaml]\ntests: []\n")
    template = repo / "helm" / "kingmaker" / "templates" / "controller-role.yaml"
    template.write_text(template.read_text().replace("verbs: [list, patch]", "verbs: [list, patch, delete]"))
    schema = repo / "helm" / "kingmaker" / "values.schema.json"
    schema.write_text(schema.read_text().replace("MLflow registered model name", "MLflow registered model"))
    proc = generate(repo, "--check")
    assert proc.returncode == 1
    for stale in ("helm/kingmaker/crds/championchallenger.yaml", "helm/kingmaker/files/monitoring/rules/extra.yaml",
                  "k8s/rbac.yaml", "helm/kingmaker/README.md"):
        assert stale in proc.stderr
    assert "extra_test.yaml" not in proc.stderr  # promtool test files are not rule files
    assert generate(repo).returncode == 0
    assert generate(repo, "--check").returncode == 0
    assert "delete" in (repo / "k8s" / "rbac.yaml").read_text()
    assert (repo / "helm/kingmaker/crds/championchallenger.yaml").read_bytes() == crd.read_bytes()


def test_a_file_without_a_source_is_stale(repo: Path) -> None:
    (repo / "k8s" / "manifests" / "leftover.yaml").write_text("kind: ConfigMap\n")
    proc = generate(repo, "--check")
    assert proc.returncode == 1 and "k8s/manifests/leftover.yaml" in proc.stderr
    assert generate(repo).returncode == 0 and not (repo / "k8s" / "manifests" / "leftover.yaml").exists()


def test_kustomize_builds_the_plain_manifests() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:  # not a skip: CI installs it (.ci/test sources .ci/tools)
        pytest.fail("kubectl is not on PATH: run `source .ci/tools` before pytest")
    proc = subprocess.run([kubectl, "kustomize", str(ROOT / "k8s")], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    kinds = [line.removeprefix("kind: ") for line in proc.stdout.splitlines() if line.startswith("kind: ")]
    assert {"CustomResourceDefinition", "Role", "Deployment", "CronJob"} <= set(kinds)
    assert "namespace: kingmaker" in proc.stdout
