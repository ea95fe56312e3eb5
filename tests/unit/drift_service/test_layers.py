"""Layering: the statistics and the analysis import no I/O world (STYLE.md, like kopf's import-linter
contract): no kubernetes, mlflow, httpx or requests — checked in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

FORBIDDEN = ("kubernetes", "mlflow", "httpx", "requests")


@pytest.mark.parametrize("module", ["drift_service.stats", "drift_service.analysis", "drift_service.document"])
def test_pure_modules_import_no_io_clients(module: str) -> None:
    code = (f"import sys, json, {module}; "
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(FORBIDDEN)!r}))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert json.loads(out.stdout) == [], f"{module} pulls in {out.stdout.strip()}"


def test_the_check_can_fail() -> None:
    """The same probe sees a forbidden import when there is one."""
    code = "import sys, json, drift_service.tracking; print(json.dumps('mlflow' in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert json.loads(out.stdout) is True
