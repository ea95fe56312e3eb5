"""The e2e tier: one real control plane per test session (tests/e2e/cluster.py), a fresh namespace per test.

The binaries come from `.ci/controlplane` (cached under ${KINGMAKER_CACHE:-~/.cache/kingmaker}); `.ci/test`
builds them before pytest starts. Run alone with: python -m pytest -m e2e tests/e2e
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.e2e.cluster import ControlPlane

TOOLS_BIN = Path(os.environ.get("KINGMAKER_CACHE", Path.home() / ".cache" / "kingmaker")) / "bin"  # .ci/tools
_CLUSTER = pytest.StashKey[ControlPlane]()


def _controlplane_bin(config: pytest.Config) -> Path:
    """Build or reuse the binaries; the script's progress goes to the terminal, not into pytest's capture
    (a cold build takes ~20 CPU-minutes; a cached one returns at once)."""
    capture = config.pluginmanager.getplugin("capturemanager")
    shown = capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext()
    with shown:
        proc = subprocess.run(["bash", str(ROOT / ".ci" / "controlplane")], check=False, stdout=subprocess.PIPE,
                              text=True)
    if proc.returncode != 0:
        pytest.fail(f".ci/controlplane failed (exit {proc.returncode}); see its output above", pytrace=False)
    return Path(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def cluster(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    bin_dir = _controlplane_bin(pytestconfig)
    stages = [*sorted((bin_dir.parent / "kwok-stages").glob("*.yaml")),  # kwok's own (see .ci/controlplane)
              *sorted((Path(__file__).parent / "kwok").glob("*.yaml"))]
    log_dir = tmp_path_factory.mktemp("controlplane-logs")  # kept after the run: pytest keeps the last 3
    with ControlPlane(bin_dir, stages, log_dir, TOOLS_BIN) as cp:
        pytestconfig.stash[_CLUSTER] = cp
        yield cp
        del pytestconfig.stash[_CLUSTER]


@pytest.fixture
def namespace(cluster: ControlPlane) -> Iterator[str]:
    name = cluster.create_namespace()
    yield name
    cluster.delete_namespace(name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport,
                                                                                            pytest.TestReport]:
    """A failed e2e test shows where each component's log is."""
    report = yield
    cp = item.config.stash.get(_CLUSTER, None)
    if report.failed and cp is not None:
        report.sections.append(("control plane", cp.describe_logs()))
    return report
