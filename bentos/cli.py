"""`kingmaker serve`: both arms and the Router as real ``bentoml serve`` processes, until Ctrl-C.

It supervises them: a child that dies (a crash, the OOM killer, a SIGKILL) is restarted on its port with
backoff (1 s, 2 s, 4 s ... 30 s; back to 1 s once it has run a minute), with a log line, while the others
keep serving — the Router falls back to the champion while the challenger is away, and a restarted Router
first moves the prediction-log segments its predecessor left. It also follows ``$KINGMAKER_HOME/serving/arms.yaml`` (`kingmaker.arms`, written by the promotion
controller): when an arm's version changes, a Scorer on the new version is started, the Router is
switched to it through the hot-reloaded ``router.yaml`` (``champion_url``/``challenger_url``), and the old
Scorer is stopped gracefully — no request is dropped on the way.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import signal
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from kingmaker.errors import PermanentError, TemporaryError

if TYPE_CHECKING:
    from bentos.procs import ServiceProcess


def add_arguments(p: argparse.ArgumentParser) -> None:
    m = p.add_argument_group("models (default: the versions in serving/arms.yaml if the controller wrote it, "
                             "else the registry aliases)")
    m.add_argument("--champion", default=None, help="champion model (default models:/<model-name>@champion)")
    m.add_argument("--challenger", default=None,
                   help="challenger model (default models:/<model-name>@challenger; skipped if not registered)")
    m.add_argument("--no-challenger", action="store_true", help="serve the champion only")
    m.add_argument("--model-name", help="registered model name (default fraud-detector)")
    n = p.add_argument_group("network (127.0.0.1 unless --host)")
    n.add_argument("--host", default="127.0.0.1", help="interface to bind")
    n.add_argument("--port", type=int, default=3000, help="Router port (0 = any free port)")
    n.add_argument("--champion-port", type=int, default=None, help="champion Scorer port (default port+1)")
    n.add_argument("--challenger-port", type=int, default=None, help="challenger Scorer port (default port+2)")
    r = p.add_argument_group("routing (written to the config file, which is hot-reloaded: edit it any time)")
    r.add_argument("--config", type=Path, help="router config file (default $KINGMAKER_HOME/serving/router.yaml)")
    r.add_argument("--mode", choices=["split", "shadow"], help="split: challenger answers its share; "
                   "shadow: champion answers, challenger scores off the response path")
    r.add_argument("--weight", type=float, help="challenger share in split mode, 0..1")
    r.add_argument("--routing-field", help="request ids entry used as the routing key (e.g. customer_id)")
    r.add_argument("--salt", help="routing salt (a new salt draws a new split)")
    p.add_argument("--ready-timeout", type=float, default=180.0, help="seconds to wait for each service")


def _update_config(path: Path, **changes: object) -> None:
    from kingmaker import router_config

    router_config.update(path, source="kingmaker serve", **changes)


def _token_file(path: Path) -> Path:
    """A generated bearer token in ``path`` (mode 0600), created once and kept across runs."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32) + "\n")
    return path


def _feedback_token(home: Path) -> tuple[dict[str, str], str]:
    """Env for the Router's /feedback tokens: the caller's, else a generated token file (mode 0600)."""
    if os.environ.get("KINGMAKER_FEEDBACK_TOKEN") or os.environ.get("KINGMAKER_FEEDBACK_TOKEN_FILE"):
        return {}, "from KINGMAKER_FEEDBACK_TOKEN(_FILE)"
    path = _token_file(home / "serving" / "feedback-token")
    return {"KINGMAKER_FEEDBACK_TOKEN_FILE": str(path)}, f"in {path}"


def _arm_token(home: Path) -> tuple[dict[str, str], str | None]:
    """With scoring auth on (KINGMAKER_SCORING_TOKEN or _FILE), the Router needs a token of its own for its arms:
    the caller's KINGMAKER_ARM_TOKEN(_FILE), else a generated file (mode 0600) given to all three processes."""
    if os.environ.get("KINGMAKER_ARM_TOKEN") or os.environ.get("KINGMAKER_ARM_TOKEN_FILE"):
        return {}, "from KINGMAKER_ARM_TOKEN(_FILE)"
    if not (os.environ.get("KINGMAKER_SCORING_TOKEN") or os.environ.get("KINGMAKER_SCORING_TOKEN_FILE")):
        return {}, None
    path = _token_file(home / "serving" / "arm-token")
    return {"KINGMAKER_ARM_TOKEN_FILE": str(path)}, f"in {path}"


def _router_arm_version(router_url: str, arm: str) -> str | None:
    """The model version the Router's ``arm`` answers with now (None: no such arm, or not discovered yet)."""
    from bentos.auth import OutgoingToken
    from kingmaker.settings import ServingSettings

    settings = ServingSettings.from_env()
    token = OutgoingToken(settings.scoring_tokens, Path(settings.scoring_token_file)
                          if settings.scoring_token_file else None)  # /routing is protected with scoring
    req = urllib.request.Request(f"{router_url}/routing", data=b"{}",
                                 headers={"Content-Type": "application/json", **token.headers()})
    with urllib.request.urlopen(req, timeout=5) as resp:
        entry = json.load(resp)["arms"].get(arm)
    return None if entry is None or entry["model"] is None else str(entry["model"]["model_version"])


@dataclass
class Backoff:
    """Delays between restarts of one child: ``first_s``, doubling up to ``max_s``; back to ``first_s`` once the
    child had run ``stable_s`` before it died."""

    first_s: float = 1.0
    max_s: float = 30.0
    stable_s: float = 60.0
    restarts: int = 0  # consecutive ones

    def next_delay(self, ran_for_s: float) -> float:
        if ran_for_s >= self.stable_s:
            self.restarts = 0
        self.restarts += 1
        return min(self.max_s, self.first_s * 2 ** (self.restarts - 1))


@dataclass
class Watch:
    """The supervisor's view of one child."""

    started_at: float
    backoff: Backoff = field(default_factory=Backoff)
    restart_at: float | None = None  # dead, to be started then
    coming_back: bool = False  # restarted, not ready yet


@dataclass
class Retry:
    """An arms-file generation `Supervisor.follow` could not apply in full: tried again at ``at``."""

    generation: int
    backoff: Backoff
    at: float = 0.0


class Supervisor:
    """The local processes: one Scorer per arm and the Router; restarts the dead ones, re-points arms on request."""

    def __init__(self, host: str, model_name: str, config_path: Path, log_dir: Path, ready_timeout: float,
                 env: dict[str, str] | None = None, clock: Callable[[], float] = time.monotonic):
        self.host = host
        self.model_name = model_name
        self.config_path = config_path
        self.log_dir = log_dir
        self.ready_timeout = ready_timeout
        self.env = env or {}
        self.clock = clock
        self.arms: dict[str, ServiceProcess] = {}
        self.versions: dict[str, str] = {}
        self.router: ServiceProcess | None = None
        self.watches: dict[str, Watch] = {}  # by service name
        self.retry: Retry | None = None  # an arms-file generation not yet fully applied

    def start_arm(self, arm: str, model_uri: str, port: int) -> ServiceProcess:
        from bentos import procs

        svc = procs.scorer(arm, model_uri, port, env=self.env, log_dir=self.log_dir)
        svc.host = self.host
        if svc.log_path:
            svc.log_path = svc.log_path.with_name(f"{arm}-{port}.log")
        return self.start(svc)

    def start(self, svc: ServiceProcess) -> ServiceProcess:
        svc.start()
        self.watches[svc.name] = Watch(self.clock())
        return svc

    def supervise(self) -> None:
        """One look at every child: a dead one is restarted after its backoff, on its port, and said so."""
        now = self.clock()
        for svc in self.services():
            watch = self.watches.setdefault(svc.name, Watch(now))
            if svc.running():
                svc.remember_family()
                if watch.coming_back and svc.is_ready():
                    watch.coming_back = False
                    print(f"{svc.name} is back at {svc.url}", flush=True)
                continue
            if watch.restart_at is None:
                code = svc.proc.returncode if svc.proc else None
                orphans = svc.kill_family()
                delay = watch.backoff.next_delay(now - watch.started_at)
                watch.restart_at = now + delay
                killed = f", {orphans} orphaned worker(s) killed" if orphans else ""
                print(f"{svc.name} exited unexpectedly (code {code}{killed}); restarting it in {delay:.0f}s "
                      f"(restart {watch.backoff.restarts}); last log lines:\n{svc.log_tail(10)}",
                      file=sys.stderr, flush=True)
            elif now >= watch.restart_at:
                print(f"restarting {svc.name} on {svc.url}", flush=True)
                svc.start()
                watch.started_at, watch.restart_at, watch.coming_back = now, None, True

    def services(self) -> list[ServiceProcess]:
        return [*self.arms.values(), *([self.router] if self.router else [])]

    def repoint(self, arm: str, version: str | None) -> bool:
        """Serve ``version`` on ``arm`` (None: no such arm) without dropping a request. False (and said
        why) when it could not: the arm serves what it served before."""
        from bentos import procs
        from kingmaker import arms as arms_file

        assert self.router is not None
        old = self.arms.get(arm)
        if version is None:
            if old is None:
                return True
            try:
                self._point_router(arm, "", None, back_to=old.url)
            except TemporaryError as exc:
                print(f"cannot remove the {arm} arm: {exc}", file=sys.stderr, flush=True)
                return False
            del self.arms[arm]
            was = self.versions.pop(arm, "?")
            old.stop()
            print(f"{arm} arm removed (it served v{was})", flush=True)
            return True
        new = self.start_arm(arm, arms_file.model_uri(self.model_name, version), procs.free_port(self.host))
        try:
            new.wait_ready(self.ready_timeout)
        except (PermanentError, TemporaryError) as exc:
            new.kill()
            print(f"cannot re-point the {arm} arm to v{version}: {exc}", file=sys.stderr, flush=True)
            return False
        try:
            self._point_router(arm, new.url, version, back_to=old.url if old else "")
        except TemporaryError as exc:
            new.stop()
            print(f"cannot re-point the {arm} arm to v{version}: {exc}", file=sys.stderr, flush=True)
            return False
        self.arms[arm] = new
        self.versions[arm] = version
        if old is not None:
            old.stop()  # SIGTERM: its in-flight requests finish first
        print(f"{arm} arm now serves v{version} at {new.url}", flush=True)
        return True

    def _point_router(self, arm: str, url: str, version: str | None, *, back_to: str) -> None:
        """Write ``arm``'s URL into the Router's config and wait until it serves ``version`` there. If it does
        not, write ``back_to`` again and raise the `TemporaryError` that says why."""
        _update_config(self.config_path, **{f"{arm}_url": url})
        try:
            self._wait_router(arm, version)
        except TemporaryError:
            _update_config(self.config_path, **{f"{arm}_url": back_to})
            raise

    def _wait_router(self, arm: str, version: str | None, timeout: float = 15.0) -> None:
        """Until the Router's ``arm`` answers with ``version`` (None: until it has no such arm)."""
        assert self.router is not None
        deadline = time.monotonic() + timeout
        last = "nothing"
        while time.monotonic() < deadline:
            try:
                reported = _router_arm_version(self.router.url, arm)
                if reported == version:
                    return
                last = f"v{reported}" if reported else "no version (no such arm, or not discovered yet)"
            except OSError as exc:
                last = f"an error ({exc})"
            time.sleep(0.2)
        raise TemporaryError(f"the Router did not switch its {arm} arm to {version or 'none'} within {timeout:.0f}s "
                             f"(/routing last said {last})")

    def follow(self, arms_path: Path, seen: int) -> int:
        """Apply a new generation of the arms file; returns the generation now applied. A generation that
        could not be applied in full is tried again after a backoff (5 s, doubling to 60 s), until it is
        applied or a newer one replaces it: the controller holds its promotion until serving matches."""
        from kingmaker import arms as arms_file

        current = arms_file.read(arms_path)
        if current.generation == seen or current.champion is None:
            return seen
        now = self.clock()
        retry = self.retry if self.retry is not None and self.retry.generation == current.generation else None
        if retry is not None and now < retry.at:
            return seen
        print(f"{arms_path} generation {current.generation}{' (again)' if retry else ''}: champion "
              f"v{current.champion}, challenger {'none' if current.challenger is None else 'v' + current.challenger}",
              flush=True)
        wanted = (("champion", current.champion), ("challenger", current.challenger))
        applied = [self.repoint(arm, version) for arm, version in wanted if self.versions.get(arm) != version]
        if all(applied):
            self.retry = None
            return current.generation
        retry = retry or Retry(current.generation, Backoff(first_s=5.0, max_s=60.0, stable_s=math.inf))
        delay = retry.backoff.next_delay(0.0)
        retry.at, self.retry = self.clock() + delay, retry
        print(f"generation {current.generation} is not applied yet; trying again in {delay:.0f}s "
              f"(attempt {retry.backoff.restarts + 1})", file=sys.stderr, flush=True)
        return seen

    def stop(self) -> None:
        if self.router is not None:
            self.router.stop()  # first: it flushes the prediction log
        for svc in reversed(list(self.arms.values())):
            svc.stop()


def run(args: argparse.Namespace) -> int:
    from bentos import procs
    from kingmaker import arms as arms_file
    from kingmaker import models
    from kingmaker.settings import MlflowSettings, default_home

    home = default_home()
    mlflow = MlflowSettings.from_env(model_name=args.model_name)
    client = mlflow.client()
    serving_dir = home / "serving"
    arms_path = serving_dir / arms_file.FILE_NAME
    pinned = arms_file.read(arms_path)
    champion_uri = args.champion or (arms_file.model_uri(mlflow.model_name, pinned.champion) if pinned.champion
                                     else f"models:/{mlflow.model_name}@champion")
    champion_ref = models.resolve(client, *models.parse_model_uri(champion_uri))
    challenger_uri: str | None = None
    challenger_version: str | None = None
    if not args.no_challenger:
        if args.challenger:
            challenger_uri = args.challenger
        elif pinned.champion:
            challenger_uri = arms_file.model_uri(mlflow.model_name, pinned.challenger) if pinned.challenger else None
        else:
            challenger_uri = f"models:/{mlflow.model_name}@challenger"
        if challenger_uri:
            try:
                challenger_version = models.resolve(client, *models.parse_model_uri(challenger_uri)).version
            except PermanentError:
                if args.challenger:
                    raise
                print(f"no {challenger_uri} registered: serving the champion only")
                challenger_uri = None
    config_path = args.config or serving_dir / "router.yaml"
    changes = {k: v for k, v in (("mode", args.mode), ("challenger_weight", args.weight),
                                 ("routing_field", args.routing_field), ("salt", args.salt)) if v is not None}
    _update_config(config_path, **changes)
    token_env, token_where = _feedback_token(home)
    arm_env, arm_where = _arm_token(home)
    log_dir = serving_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)

    def port(value: int | None, offset: int) -> int:
        if value is not None and value != 0:
            return value
        return procs.free_port(args.host) if value == 0 or args.port == 0 else args.port + offset

    sup = Supervisor(args.host, mlflow.model_name, config_path, log_dir, args.ready_timeout, env=arm_env)
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        router_port = procs.free_port(args.host) if args.port == 0 else args.port
        sup.arms["champion"] = sup.start_arm("champion", champion_uri, port(args.champion_port, 1))
        sup.versions["champion"] = champion_ref.version
        if challenger_uri and challenger_version:
            sup.arms["challenger"] = sup.start_arm("challenger", challenger_uri, port(args.challenger_port, 2))
            sup.versions["challenger"] = challenger_version
        # The URLs of this session go into the config file (a previous session's would be stale).
        _update_config(config_path, champion_url=sup.arms["champion"].url,
                       challenger_url=sup.arms["challenger"].url if "challenger" in sup.arms else "")
        sup.router = procs.router(router_port, sup.arms["champion"].url,
                                  sup.arms["challenger"].url if "challenger" in sup.arms else "",
                                  config=config_path, env={**token_env, **arm_env}, log_dir=log_dir)
        sup.router.host = args.host
        sup.start(sup.router)
        for s in sup.services():
            s.wait_ready(args.ready_timeout)
        print(f"\nkingmaker serving (logs in {log_dir}):")
        print(f"  router      {sup.router.url}   POST /predict /predict_batch /feedback /routing")
        for arm, svc in sup.arms.items():
            print(f"  {arm:<11} {svc.url}   {mlflow.model_name} v{sup.versions[arm]}")
        print(f"  config      {config_path}  (hot-reloaded)")
        print(f"  arms        {arms_path}  (followed: the promotion controller re-points arms here)")
        print(f"  feedback    bearer token {token_where}")
        if arm_where:
            print(f"  arm token   scoring auth is on: the Router's own token to its arms {arm_where}")
        print(f"\ntry: curl -s -XPOST {sup.router.url}/predict -H 'content-type: application/json' "
              f"-d '{{\"features\": {{...}}, \"ids\": {{\"customer_id\": \"c1\"}}}}'")
        print("Ctrl-C stops everything.", flush=True)
        seen = pinned.generation
        while not stopping:
            sup.supervise()
            try:
                seen = sup.follow(arms_path, seen)
            except (PermanentError, TemporaryError) as exc:
                print(f"arms file: {exc}", file=sys.stderr, flush=True)
            time.sleep(0.5)
        return 0
    finally:
        print("stopping: router first (flushes the prediction log), then the arms ...", flush=True)
        sup.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("stopped.")

