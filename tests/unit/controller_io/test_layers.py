"""The controller's I/O modules keep their layers: the status model is pure, the loop reaches clients only
through its ports, and `kingmaker promote --help` imports no heavy client (subcommands import them in `run`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("kubernetes", "mlflow", "httpx", "prometheus_client", "pandas", "bentoml")


def _imported(module: str) -> list[str]:
    code = (f"import sys, json, {module}; "
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=120)
    return list(json.loads(out.stdout))


def test_the_cli_module_is_light() -> None:
    assert _imported("k8s.cli") == []


@pytest.mark.parametrize("module", ["k8s.state"])
def test_the_status_model_is_pure(module: str) -> None:
    assert [m for m in _imported(module) if m != "pandas"] == []  # pandas comes with kingmaker.logs' Mode


def test_the_loop_reaches_clients_only_through_its_ports() -> None:
    """observe -> decide -> act import no kubernetes, MLflow or HTTP client: the adapters bring their own."""
    assert [m for m in _imported("k8s.controller") if m not in ("pandas", "prometheus_client")] == []


def test_the_probe_sees_heavy_imports() -> None:
    assert _imported("kingmaker.catalog") == ["prometheus_client"]
