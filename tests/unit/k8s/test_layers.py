"""Layering of the controller, checked in a fresh interpreter (what pyproject's import-linter contracts state,
seen at run time): the decision core and the status model import no I/O client and no I/O library (pandas,
pyarrow, fsspec), the loop reaches clients only through its ports, and `kingmaker promote --help` imports no
heavy client (subcommands import them in `run`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

IO_CLIENTS = ("kubernetes", "mlflow", "httpx", "requests", "prometheus_client")
IO_LIBRARIES = ("pandas", "pyarrow", "fsspec")
HEAVY = ("kubernetes", "mlflow", "httpx", "prometheus_client", "pandas", "pyarrow", "fsspec", "bentoml")


def _imported(module: str, watched: tuple[str, ...] = HEAVY) -> list[str]:
    """The watched top-level packages that importing ``module`` pulls in."""
    code = (f"import sys, json, {module}; "
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(watched)!r}))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=120)
    return list(json.loads(out.stdout))


@pytest.mark.parametrize("module", ["k8s.decide", "k8s.policy", "k8s.sequential", "k8s.simulate", "k8s.resource",
                                    "k8s.state"])
def test_pure_modules_import_no_io_clients_or_libraries(module: str) -> None:
    assert _imported(module, IO_CLIENTS + IO_LIBRARIES) == [], f"{module} pulls in I/O"


def test_the_cli_module_is_light() -> None:
    assert _imported("k8s.cli") == []


def test_the_loop_reaches_clients_only_through_its_ports() -> None:
    """observe -> decide -> act import no kubernetes, MLflow, HTTP client or log reader: the adapters
    (k8s.sources.*, k8s.kube, k8s.local) bring their own. act's metrics are prometheus_client's."""
    assert _imported("k8s.observe") == []
    assert _imported("k8s.controller") == ["prometheus_client"]


@pytest.mark.parametrize(("module", "brings"), [("k8s.sources.logs", ["fsspec", "pandas", "pyarrow"]),
                                               ("k8s.sources.drift", []), ("k8s.sources.prometheus", [])])
def test_each_source_brings_only_its_own_client(module: str, brings: list[str]) -> None:
    """The Prometheus client (httpx) is imported when a PrometheusAPI is made; the log reader needs pandas."""
    assert [m for m in _imported(module) if m != "prometheus_client"] == brings


def test_the_probe_sees_heavy_imports() -> None:
    """The same probe sees a forbidden import when there is one."""
    assert _imported("kingmaker.catalog") == ["prometheus_client"]
    assert _imported("kingmaker.catalog", IO_CLIENTS) == ["prometheus_client"]
