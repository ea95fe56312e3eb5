"""`kingmaker serve` end to end (real processes, Ctrl-C stops everything and flushes the log), and
`bentoml build` of both bentofiles."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from kingmaker import logs

from .bentos_support import start_serve, transactions

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _private_home(serving_home: Path, tmp_path: Path) -> Path:
    """A copy of the trained registry (the artifacts stay where they are): serving/ files stay private."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(serving_home / "mlflow.db", home / "mlflow.db")
    return home


def test_kingmaker_serve_starts_serves_and_stops_cleanly(serving_home: Path, tmp_path: Path) -> None:
    home = _private_home(serving_home, tmp_path)
    config = tmp_path / "router.yaml"
    proc, urls, text = start_serve(home, tmp_path, "--weight", "0.25", "--config", str(config))
    try:
        assert "Ctrl-C stops everything" in text, text
        assert set(urls) == {"router", "champion", "challenger"}, text
        assert yaml.safe_load(config.read_text())["challenger_weight"] == 0.25
        token_file = home / "serving" / "feedback-token"
        assert token_file.exists() and oct(token_file.stat().st_mode & 0o777) == "0o600"
        body = transactions(1, seed=31)[0]
        r = httpx.post(f"{urls['router']}/predict", json=body)
        assert r.status_code == 200 and r.json()["request_id"] == body["request_id"]
        fb = httpx.post(f"{urls['router']}/feedback", json={"request_id": body["request_id"], "label": 1},
                        headers={"Authorization": f"Bearer {token_file.read_text().strip()}"})
        assert fb.status_code == 200 and fb.json()["unknown"] == 0
        for name in ("router", "champion", "challenger"):
            assert httpx.get(f"{urls[name]}/readyz").status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "stopped." in out
    for url in urls.values():
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/livez", timeout=2)
    assert body["request_id"] in set(logs.read_predictions(str(tmp_path / "predictions"))["request_id"])


def test_kingmaker_serve_follows_the_arms_file(serving_home: Path, tmp_path: Path) -> None:
    """The controller re-points an arm by writing serving/arms.yaml: a Scorer on the new version takes
    over with no failed request, and the old Scorer stops."""
    from kingmaker import arms

    home = _private_home(serving_home, tmp_path)  # this test writes serving/arms.yaml
    proc, urls, text = start_serve(home, tmp_path, "--weight", "1.0")
    failures: list[str] = []
    versions: list[tuple[str, str]] = []
    stop = threading.Event()
    try:
        assert "Ctrl-C stops everything" in text, text
        body = transactions(1, seed=41)[0]
        old_challenger = urls["challenger"]

        def load() -> None:
            with httpx.Client(timeout=10) as http:
                while not stop.is_set():
                    r = http.post(f"{urls['router']}/predict", json={**body, "request_id": None})
                    if r.status_code != 200:
                        failures.append(r.text)
                    else:
                        versions.append((r.json()["arm"], r.json()["model_version"]))

        worker = threading.Thread(target=load)
        worker.start()
        time.sleep(1)
        arms.write(home / "serving" / arms.FILE_NAME, "fraud-detector", "1", "1", generation=1)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not versions or versions[-1] != ("challenger", "1")):
            time.sleep(0.2)
        time.sleep(1)
        stop.set()
        worker.join()
        assert versions[0] == ("challenger", "2") and versions[-1] == ("challenger", "1")
        assert not failures, failures[:3]
        with pytest.raises(httpx.ConnectError):  # the old challenger Scorer was stopped
            httpx.get(f"{old_challenger}/livez", timeout=2)
    finally:
        stop.set()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "challenger arm now serves v1" in out
    router_log = (home / "serving" / "logs" / "router.log").read_text()  # the Router says what it did
    assert "challenger arm moves from" in router_log and "fraud-detector version 1" in router_log, router_log[-3000:]
    assert "prediction log flushed" in router_log, router_log[-3000:]


@pytest.mark.parametrize("role", ["scorer", "router"])
def test_bentoml_build(role: str, tmp_path: Path) -> None:
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml")}
    bentoml = Path(sys.executable).with_name("bentoml")
    proc = subprocess.run([str(bentoml), "build", "-f", f"bentos/bentofile.{role}.yaml", "-o", "tag", "."],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"kingmaker-{role}:" in proc.stdout
    bentos = list((tmp_path / "bentoml" / "bentos" / f"kingmaker-{role}").iterdir())
    assert len([b for b in bentos if b.is_dir()]) == 1
    src = next(b for b in bentos if b.is_dir()) / "src"
    assert (src / "bentos" / f"{role}.py").exists() and (src / "kingmaker" / "logs.py").exists()
    assert not (src / "tests").exists()
