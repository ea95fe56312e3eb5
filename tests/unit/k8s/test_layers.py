"""Layering of the controller, checked in a fresh interpreter (like kopf's import-linter contract): the decision
core imports no I/O world, the status model is pure, the loop reaches clients only through its ports, and
`kingmaker promote --help` imports no heavy client (subcommands import them in `run`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

IO_CLIENTS = ("kubernetes", "mlflow", "httpx", "requests", "prometheus_client")
HEAVY = ("kubernetes", "mlflow", "httpx", "prometheus_client", "pandas", "bentoml")


def _imported(module: str, watched: tuple[str, ...] = HEAVY) -> list[str]:
    """The watched top-level packages that importing ``module`` pulls in."""
    code = (f"import sys, json, {module}; "
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(watched)!r}))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=120)
    return list(json.loads(out.stdout))


@pytest.mark.parametrize("module", ["k8s.decide", "k8s.policy", "k8s.sequential", "k8s.simulate", "k8s.resource"])
def test_pure_modules_import_no_io_clients(module: str) -> None:
    assert _imported(module, IO_CLIENTS) == [], f"{module} pulls in I/O clients"


def test_the_cli_module_is_light() -> None:
    assert _imported("k8s.cli") == []


@pytest.mark.parametrize("module", ["k8s.state"])
def test_the_status_model_is_pure(module: str) -> None:
    assert [m for m in _imported(module) if m != "pandas"] == []  # pandas comes with kingmaker.logs' Mode


def test_the_loop_reaches_clients_only_through_its_ports() -> None:
    """observe -> decide -> act import no kubernetes, MLflow or HTTP client: the adapters bring their own."""
    assert [m for m in _imported("k8s.controller") if m not in ("pandas", "prometheus_client")] == []


def test_the_probe_sees_heavy_imports() -> None:
    """The same probe sees a forbidden import when there is one."""
    assert _imported("kingmaker.catalog") == ["prometheus_client"]
    assert _imported("kingmaker.catalog", IO_CLIENTS) == ["prometheus_client"]
