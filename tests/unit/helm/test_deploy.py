""".ci/deploy: its plan (a pure function of the release as it is) and how it fails without a cluster.
The e2e tier runs it for real against an API server."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from importlib.machinery import SourceFileLoader
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import ROOT, helm_binary

SCRIPT = ROOT / ".ci" / "deploy"


def _load() -> ModuleType:
    loader = SourceFileLoader("kingmaker_deploy", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module  # dataclasses look their module up
    loader.exec_module(module)
    return module


deploy = _load()


def live(active: str = "blue", tags: dict[str, str] | None = None, images_tag: str = "", status: str = "deployed",
         app_version: str = "0.1.0") -> object:
    values: dict[str, object] = {"activeColor": active, "images": {"tag": images_tag}}
    for colour, tag in (tags or {}).items():
        values[colour] = {"enabled": True, "image": {"tag": tag}}
    return deploy.Live(7, status, values, app_version)


def test_a_first_install_serves_the_version_on_blue() -> None:
    p = deploy.plan(None, "1.0.0")
    assert [s.kind for s in p.steps] == ["upgrade", "test"]
    assert set(p.steps[0].sets) == {"activeColor=blue", "blue.enabled=true", "blue.image.tag=1.0.0", "images.tag=1.0.0"}
    assert p.rollback_to is None and p.live_after == "blue"


def test_a_new_version_is_staged_on_the_idle_colour_then_switched() -> None:
    p = deploy.plan(live("blue", {"blue": "1.0.0"}), "1.1.0")
    assert [s.kind for s in p.steps] == ["upgrade", "test", "upgrade", "test"]
    stage, switch = p.steps[0].sets, p.steps[2].sets
    assert "blue.image.tag=1.0.0" in stage  # the live colour is pinned: it does not restart
    assert {"green.enabled=true", "green.image.tag=1.1.0", "activeColor=blue"} <= set(stage)
    assert "activeColor=green" in switch and "activeColor=blue" not in switch
    assert p.rollback_to == 7 and p.live_after == "green"


def test_the_next_version_goes_back_to_blue() -> None:
    p = deploy.plan(live("green", {"blue": "1.0.0", "green": "1.1.0"}), "1.2.0")
    assert {"green.image.tag=1.1.0", "blue.image.tag=1.2.0", "activeColor=green"} <= set(p.steps[0].sets)
    assert "activeColor=blue" in p.steps[2].sets


def test_the_live_colours_tag_falls_back_like_the_chart() -> None:
    assert deploy.plan(live("blue", images_tag="0.9.0"), "1.0.0").steps[0].sets[0] == "blue.image.tag=0.9.0"
    assert deploy.plan(live("blue"), "1.0.0").steps[0].sets[0] == "blue.image.tag=0.1.0"  # appVersion


def test_no_switch_stops_after_testing_the_staged_colour() -> None:
    p = deploy.plan(live("blue", {"blue": "1.0.0"}), "1.1.0", switch=False)
    assert [s.kind for s in p.steps] == ["upgrade", "test"] and p.live_after == "blue"


def test_a_release_that_is_not_deployed_is_refused() -> None:
    with pytest.raises(deploy.Usage, match="pending-upgrade"):
        deploy.plan(live(status="pending-upgrade"), "1.1.0")


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    path = f"{Path(helm_binary()).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": path, **(env or {})}, check=False)


def test_help_explains_the_blue_green_steps() -> None:
    proc = _run("--help")
    assert proc.returncode == 0
    assert "--version" in proc.stdout and "stage" in proc.stdout and "roll back" in proc.stdout


def test_without_a_cluster_it_says_so_in_one_line(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
                          "contexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n"
                          "users: [{name: u, user: {token: x}}]\n")
    proc = _run("--version", "1.0.0", env={"KUBECONFIG": str(kubeconfig)})
    assert proc.returncode == 2
    assert proc.stderr.startswith("deploy: cannot reach the Kubernetes API") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("args", "message"), [
    (["--version", "v1.0.0"], "--version must be an image tag"),
    (["--version", "1.0.0", "--chart", "/nonexistent"], "--chart /nonexistent: no Chart.yaml there"),
    (["--version", "1.0.0", "-f", "/nonexistent.yaml"], "--values /nonexistent.yaml: no such file"),
])
def test_bad_arguments_fail_readably(args: list[str], message: str) -> None:
    proc = _run(*args)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_dry_run_prints_the_helm_commands_of_a_first_install() -> None:
    proc = _run("--version", "1.0.0", "--registry", "ghcr.io/acme", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    upgrade = next(line for line in proc.stdout.splitlines() if line.startswith("helm upgrade"))
    for flag in ("--install", "--rollback-on-failure", "--wait=watcher", "--create-namespace",
                 "--set images.registry=ghcr.io/acme", "--set blue.image.tag=1.0.0"):
        assert flag in upgrade
    assert "--atomic" not in proc.stdout
    assert any(line.startswith("helm test kingmaker") and "--logs" in line for line in proc.stdout.splitlines())
