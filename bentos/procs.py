"""Local ``bentoml serve`` processes: start, wait for readiness, stop gracefully.

Used by ``kingmaker serve``, the serving benchmark and the integration tests, so all three run the
services exactly the same way. Each service runs in its own session (process group), so a Ctrl-C in
the terminal reaches only the parent, which then stops the children in order: the Router first (it
flushes its prediction log), then the arms.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kingmaker.errors import PermanentError, TemporaryError
from kingmaker.localstack import free_port as free_port  # re-exported: serve, the benchmark and tests use it

ROOT = Path(__file__).resolve().parents[1]
SCORER = "bentos.scorer:Scorer"
ROUTER = "bentos.router:Router"

#: Environment every Scorer process gets. OpenMP's default busy-wait makes XGBoost's idle threads
#: spin after each prediction; next to an event loop on a small machine that cut Scorer throughput
#: from ~1,000 to ~40 req/s in our measurements. PASSIVE makes idle threads sleep instead.
SCORER_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
#: BentoML's process manager (circus) reserves two local ports for its own sockets, releases them and binds them
#: a moment later; another process starting at the same time can take one in between, and the server exits while
#: starting with "Address already in use" for a port that is not its own. Such a start is tried again, this often.
PORT_RACE_RETRIES = 2
_LOST_PORT = re.compile(r"Address already in use \(addr='tcp://[^']*:(\d+)'\)")


def process_home(base: str | None, name: str, port: int) -> Path:
    """The ``BENTOML_HOME`` of one server process: its own folder below ``base`` (default ``~/bentoml``).

    BentoML keeps prometheus_client's multiprocess files in ``$BENTOML_HOME/prometheus_multiproc_dir`` and
    empties that folder whenever a server starts. Servers sharing one home would each expose all the others'
    metrics (a Prometheus scraping the three of them counted everything three times) and a re-pointed arm
    would wipe the files the running ones still write to. One home per process keeps ``/metrics`` to its own.
    """
    root = Path(base) if base else Path.home() / "bentoml"
    return root / "processes" / f"{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}-{port}"


@dataclass
class ServiceProcess:
    """One ``bentoml serve <target>`` process on ``host:port`` with extra environment ``env``."""

    name: str
    target: str
    port: int
    env: Mapping[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    log_path: Path | None = None
    working_dir: Path = ROOT
    proc: subprocess.Popen[bytes] | None = None
    home: Path | None = None  # this process's BENTOML_HOME (`process_home`), removed once it has stopped
    family: list[Any] = field(default_factory=list)  # psutil.Process of the server and its workers, last seen
    log_start: int = 0  # the log's size when this process started: what it wrote since is `log_since_start`

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> ServiceProcess:
        cmd = [sys.executable, "-m", "bentoml", "serve", self.target, "--host", self.host, "--port", str(self.port),
               "--working-dir", str(self.working_dir)]
        env = {**os.environ, **self.env}
        self.home = process_home(env.get("BENTOML_HOME"), self.name, self.port)
        env["BENTOML_HOME"] = str(self.home)
        self.log_start = self.log_path.stat().st_size if self.log_path and self.log_path.exists() else 0
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115 (lives with the process)
        try:
            self.proc = subprocess.Popen(cmd, env=env, cwd=self.working_dir, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        finally:
            if self.log_path:
                out.close()  # type: ignore[union-attr]
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def remember_family(self) -> None:
        """Note the server's worker processes (circus starts each in its own session): if the server dies, its
        workers are orphans that still hold the port, and `kill_family` can find them."""
        import psutil

        if not self.running():
            return
        try:
            parent = psutil.Process(self.pid)
            self.family = [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass

    def kill_family(self) -> int:
        """SIGKILL the server and its workers as last seen by `remember_family` (after the server died: the
        orphaned workers still holding its port). Returns how many were still alive."""
        import psutil

        alive = [p for p in self.family if p.is_running()]  # is_running also checks the start time: no pid reuse
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(alive, timeout=10)
        self.family = []
        return len(alive)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path or not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_since_start(self) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as f:
            f.seek(self.log_start)
            return f.read().decode(errors="replace")

    def lost_port_race(self) -> bool:
        """Whether this start died because another process took one of circus's own ports (`PORT_RACE_RETRIES`)."""
        return any(int(port) != self.port for port in _LOST_PORT.findall(self.log_since_start()))

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=2.0) as resp:
                return bool(resp.status == 200)
        except OSError:  # refused, reset, timeout, or an HTTP error status (HTTPError is an OSError)
            return False

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        retries = PORT_RACE_RETRIES
        while time.monotonic() < deadline:
            if not self.running() and retries and self.lost_port_race():
                retries -= 1
                print(f"{self.name}: another process took one of BentoML's internal ports while it started; "
                      "starting it again", file=sys.stderr, flush=True)
                self.kill()  # its workers, if any got that far
                self.start()
                continue
            if not self.running():
                raise PermanentError(f"{self.name} exited with code {self.proc.returncode if self.proc else '?'} "
                                     f"while starting; last log lines:\n{self.log_tail()}")
            if self.is_ready():
                return
            time.sleep(0.25)
        raise TemporaryError(f"{self.name} at {self.url} was not ready after {timeout:.0f}s; log: {self.log_path}")

    def signal(self, sig: int) -> None:
        if self.running():
            os.kill(self.pid, sig)

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM to ``bentoml serve``: it stops its workers gracefully. SIGKILL the group on timeout."""
        if self.proc is None:
            return None
        if self.running():
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        code = self.proc.wait()
        self._remove_home()
        return code

    def _remove_home(self) -> None:
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the server and all its workers at once: a crash, not a stop. (circus starts each
        worker in its own session, so killing the process group would leave the workers serving.)"""
        if self.proc is None:
            return
        self.remember_family()
        self.kill_family()
        self.proc.wait()
        self._remove_home()


def scorer(arm: str, model_uri: str, port: int, *, env: Mapping[str, str] | None = None,
           log_dir: Path | None = None) -> ServiceProcess:
    return ServiceProcess(f"{arm} scorer", SCORER, port,
                          {**SCORER_ENV, "KINGMAKER_ARM": arm, "KINGMAKER_MODEL_URI": model_uri, **(env or {})},
                          log_path=log_dir / f"{arm}.log" if log_dir else None)


def router(port: int, champion_url: str, challenger_url: str, *, config: Path | None,
           env: Mapping[str, str] | None = None, log_dir: Path | None = None) -> ServiceProcess:
    values = {"KINGMAKER_CHAMPION_URL": champion_url, "KINGMAKER_CHALLENGER_URL": challenger_url,
              "KINGMAKER_ROUTER_CONFIG": str(config) if config else "", **(env or {})}
    return ServiceProcess("router", ROUTER, port, values, log_path=log_dir / "router.log" if log_dir else None)
