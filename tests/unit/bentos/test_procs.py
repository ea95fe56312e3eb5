"""ServiceProcess start-up (bentos.procs) with a stand-in ``bentoml`` that fails the way BentoML's does."""

from __future__ import annotations

from pathlib import Path

import pytest

from bentos.procs import PORT_RACE_RETRIES, ServiceProcess, free_port
from kingmaker.errors import PermanentError

#: ``python -m bentoml serve <target> --host H --port P ...``, run in the working dir, finds this module first. The
#: target says how each start goes ("race": circus lost an internal port, "own": its own port is taken, "boom":
#: anything else); once the starts listed run out it serves ``/readyz``.
FAKE_BENTOML = '''
import http.server, sys
from pathlib import Path
target, port = sys.argv[2], int(sys.argv[sys.argv.index("--port") + 1])
starts = Path("starts")
n = len(starts.read_text()) if starts.exists() else 0
starts.write_text("x" * (n + 1))
plan = target.split(",")
if n < len(plan) and plan[n] == "boom":
    print("boom", flush=True)
    sys.exit(1)
if n < len(plan):
    lost = 41983 if plan[n] == "race" else port
    print(f"zmq.error.ZMQError: Address already in use (addr='tcp://127.0.0.1:{lost}')", flush=True)
    sys.exit(1)
class Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
http.server.HTTPServer(("127.0.0.1", port), Ready).serve_forever()
'''


def _service(tmp_path: Path, plan: str) -> ServiceProcess:
    (tmp_path / "bentoml").mkdir()
    (tmp_path / "bentoml" / "__init__.py").write_text("")  # a regular package: found before the real one
    (tmp_path / "bentoml" / "__main__.py").write_text(FAKE_BENTOML)
    return ServiceProcess("scorer", plan, free_port("127.0.0.1"), log_path=tmp_path / "scorer.log",
                          working_dir=tmp_path, env={"BENTOML_HOME": str(tmp_path / "home")})


def _starts(tmp_path: Path) -> int:
    return len((tmp_path / "starts").read_text())


def test_a_start_that_lost_an_internal_port_is_tried_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    svc = _service(tmp_path, ",".join(["race"] * PORT_RACE_RETRIES)).start()
    try:
        svc.wait_ready(30)
        assert svc.is_ready()
    finally:
        svc.stop()
    assert _starts(tmp_path) == PORT_RACE_RETRIES + 1
    assert "starting it again" in capsys.readouterr().err


def test_a_start_that_keeps_losing_the_race_fails_with_its_log(tmp_path: Path) -> None:
    svc = _service(tmp_path, ",".join(["race"] * (PORT_RACE_RETRIES + 1))).start()
    with pytest.raises(PermanentError, match=r"(?s)exited with code 1 while starting.*41983"):
        svc.wait_ready(30)
    assert _starts(tmp_path) == PORT_RACE_RETRIES + 1


def test_its_own_port_taken_is_not_retried(tmp_path: Path) -> None:
    svc = _service(tmp_path, "own").start()
    with pytest.raises(PermanentError, match="Address already in use"):
        svc.wait_ready(30)
    assert _starts(tmp_path) == 1


def test_only_what_this_start_logged_counts(tmp_path: Path) -> None:
    svc = _service(tmp_path, "race,boom").start()
    with pytest.raises(PermanentError, match="boom"):
        svc.wait_ready(30)
    assert _starts(tmp_path) == 2  # the first start's race, still in the log, does not earn the second a retry
