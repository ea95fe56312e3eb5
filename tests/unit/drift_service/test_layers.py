"""Layering (pyproject's import-linter contracts, seen at run time in a fresh interpreter): the statistics
import no I/O client and no I/O library (pandas, pyarrow, fsspec); the analysis, which works on frames the
window loader read, imports no I/O client (kubernetes, mlflow, httpx, requests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

IO_CLIENTS = ("kubernetes", "mlflow", "httpx", "requests")
IO_LIBRARIES = ("pandas", "pyarrow", "fsspec")


@pytest.mark.parametrize(("module", "forbidden"), [("drift_service.stats", IO_CLIENTS + IO_LIBRARIES),
                                                   ("drift_service.analysis", IO_CLIENTS),
                                                   ("drift_service.document", IO_CLIENTS)])
def test_pure_modules_import_no_io(module: str, forbidden: tuple[str, ...]) -> None:
    code = (f"import sys, json, {module}; "
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(forbidden)!r}))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert json.loads(out.stdout) == [], f"{module} pulls in {out.stdout.strip()}"


def test_the_check_can_fail() -> None:
    """The same probe sees a forbidden import when there is one."""
    code = "import sys, json, drift_service.tracking; print(json.dumps('mlflow' in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert json.loads(out.stdout) is True
