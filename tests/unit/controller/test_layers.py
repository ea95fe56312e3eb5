"""Layering: the decision core imports no I/O world (STYLE.md): no kubernetes, mlflow, httpx, requests or
prometheus_client — checked in a fresh interpreter, like kopf's import-linter contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

FORBIDDEN = ("kubernetes", "mlflow", "httpx", "requests", "prometheus_client")


def _imported(module: str) -> list[str]:
    code = (f"import sys, json, {module}; "
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(FORBIDDEN)!r}))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return list(json.loads(out.stdout))


@pytest.mark.parametrize("module", ["k8s.decide", "k8s.policy", "k8s.sequential", "k8s.simulate", "k8s.resource"])
def test_pure_modules_import_no_io_clients(module: str) -> None:
    assert _imported(module) == [], f"{module} pulls in I/O clients"


def test_the_check_can_fail() -> None:
    """The same probe sees a forbidden import when there is one."""
    assert _imported("kingmaker.catalog") == ["prometheus_client"]
