"""The fuzz tier: Schemathesis against the real Router's and Scorer's OpenAPI documents (``/docs.json``), every
endpoint, valid and invalid bodies, malformed and unsupported content types (its coverage phase), then
random cases until the time budget is spent. No answer may be a 5xx, every request gets an answer, no body
carries a traceback, every error answer has a stable code (`fuzz_checks`), and the services' logs stay small.

Run it alone with ``pytest -m fuzz`` (real ``bentoml serve`` processes; about two minutes on 2 cores).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bentos.procs import ServiceProcess

from .bentos_support import Stack, serving_stack

pytestmark = pytest.mark.fuzz
ROOT = Path(__file__).resolve().parents[2]
BUDGET_S = 35  # per service: `st run` stops generating after this long
CHECKS = "not_a_server_error,no_traceback_in_body,error_answers_have_a_code"


@pytest.fixture(scope="module")
def stack(serving_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with serving_stack(serving_home, tmp_path_factory.mktemp("fuzz"), {"challenger_weight": 0.5}) as s:
        yield s


def schemathesis_run(svc: ServiceProcess, report: Path, *headers: str) -> subprocess.CompletedProcess[str]:
    """`st run` against one service. One worker: Hypothesis describes its strategies with `ast.parse`, and on
    CPython 3.11.7 two threads parsing at once corrupt the AST constructor's shared recursion counter (gh-106905,
    fixed in later patch releases): "SystemError: AST constructor recursion depth mismatch" stopped the run before
    any request."""
    st = Path(sys.executable).with_name("st")
    cmd = [str(st), "run", f"{svc.url}/docs.json", "--url", svc.url, "--checks", CHECKS, "--mode", "all",
           "--phases", "examples,coverage,fuzzing", "--max-examples", "40", "--max-time", str(BUDGET_S),
           "--request-timeout", "10", "--seed", "10", "--workers", "1", "--no-shrink", "--report", "ndjson",
           "--report-dir", str(report)]
    for h in headers:
        cmd += ["-H", h]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.integration.fuzz_checks", "PYTHONPATH": str(ROOT),
           "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=BUDGET_S * 4)


@pytest.mark.parametrize("target", ["router", "champion"])
def test_no_5xx_no_empty_reply_no_traceback(stack: Stack, target: str, tmp_path: Path) -> None:
    svc = stack.router if target == "router" else stack.champion
    assert svc.log_path is not None
    log_size = svc.log_path.stat().st_size
    proc = schemathesis_run(svc, tmp_path, "Authorization: Bearer it-token")  # the Router's /feedback token
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    operations = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", out)
    assert operations and operations.group(1) == operations.group(2) == operations.group(3), out[-3000:]
    assert int(operations.group(3)) >= 8  # every operation of the document: the endpoints and BentoML's pages
    assert svc.running()
    grown = svc.log_path.read_bytes()[log_size:].decode(errors="replace")
    assert "Traceback" not in grown, grown[-3000:]
    assert len(grown) < 50_000, f"the log grew by {len(grown)} bytes"
