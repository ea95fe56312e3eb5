"""The production-shaped stores as real local processes, for the integration tier.

- `ObjectStore`: SeaweedFS ``weed mini`` (S3 API) on 127.0.0.1, an empty data folder, telemetry off,
  one S3 identity whose keys are generated per run.
- `Postgres`: ``initdb`` + ``postgres`` from Debian's package on 127.0.0.1, a password generated per
  run, one database per use. As root it runs as the unprivileged ``postgres`` user (initdb refuses root).
- `MlflowServer`: ``mlflow server`` with its backend store in PostgreSQL and artifacts proxied to
  ``s3://<bucket>/mlartifacts`` (clients talk HTTP only and need no S3 credentials).

Each is a `Service`: one process (own session, log file) that can be stopped and started again on the
same ports — the outage tests stop the registry and bring it back. Binaries come from `.ci/stores`
(``KINGMAKER_WEED``, ``KINGMAKER_PG_BIN``, else where it puts them); without them the fixtures fail
with one line naming what is missing.
Secrets are passed through the environment only, never on a command line or in a URL.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bentos.procs import free_port

#: What every store process and client gets: no phone-home. (MLflow's usage telemetry; botocore
#: would otherwise probe the EC2 metadata address for credentials/region.)
NO_TELEMETRY = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "AWS_EC2_METADATA_DISABLED": "true"}
REGION = "us-east-1"


class StoreUnavailable(RuntimeError):
    """A store binary or OS user is missing: the fixtures fail with this one line (as for Prometheus)."""


@dataclass
class Service:
    """One server process in its own session, logging to ``log_path``; ready when ``probe()`` is true."""

    name: str
    argv: Sequence[str]
    log_path: Path
    probe: Callable[[], bool]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    user: str | None = None  # run as this OS user (only when we are root)
    stop_signal: int = signal.SIGTERM
    ready_timeout: float = 120.0
    proc: subprocess.Popen[bytes] | None = None
    #: Seconds from spawn to ready, one entry per start; from the stop signal to exit, one per stop.
    ready_seconds: list[float] = field(default_factory=list)
    stop_seconds: list[float] = field(default_factory=list)

    def start(self) -> Service:
        if self.running():
            return self
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== {self.name} starting: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(list(self.argv), env={**_base_env(), **self.env}, cwd=self.cwd,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, **_as_user(self.user))
        deadline = started + self.ready_timeout
        while not self.probe():
            if not self.running():
                raise RuntimeError(f"{self.name} exited with code {self.proc.returncode} while starting:\n"
                                   f"{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} was not ready after {self.ready_timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.2)
        self.ready_seconds.append(time.monotonic() - started)
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """``stop_signal`` to the whole process group (servers with workers), SIGKILL after ``timeout``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            started = time.monotonic()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, self.stop_signal)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self.stop_seconds.append(time.monotonic() - started)
        with contextlib.suppress(ProcessLookupError):  # stragglers of the group (e.g. workers)
            os.killpg(self.proc.pid, signal.SIGKILL)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return f"({self.log_path} does not exist)"
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {self.log_path} (last {len(text)} lines)\n" + "\n".join(text)


def _base_env() -> dict[str, str]:
    """The caller's environment minus anything that would point a store at other stores or other keys."""
    drop = ("AWS_", "MLFLOW_", "PG", "FSSPEC_")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(drop)}, **NO_TELEMETRY}


def _as_user(user: str | None) -> dict[str, Any]:
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [], "umask": 0o077}


def _http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _found(env_var: str, base: Path, pattern: str, what: str) -> Path:
    """``$env_var`` (sourcing .ci/stores sets it), else the newest ``base/pattern`` (where .ci/stores puts it)."""
    if os.environ.get(env_var):
        path = Path(os.environ[env_var])
        if path.exists():
            return path
        raise StoreUnavailable(f"{what}: ${env_var}={path} does not exist (run `bash .ci/stores`)")
    matches = sorted(base.glob(pattern), key=lambda p: p.stat().st_mtime)
    if not matches:
        raise StoreUnavailable(f"{what} not found (no ${env_var}, nothing at {base / pattern}): run `bash .ci/stores`")
    return matches[-1]


def weed_binary() -> Path:
    cache = Path(os.environ.get("KINGMAKER_CACHE") or Path.home() / ".cache" / "kingmaker")
    return _found("KINGMAKER_WEED", cache, "seaweedfs-*/weed", "the SeaweedFS `weed` binary")


def postgres_bin() -> Path:
    return _found("KINGMAKER_PG_BIN", Path("/usr/lib/postgresql"), "*/bin", "PostgreSQL's server binaries")


# --- S3: SeaweedFS -------------------------------------------------------------------------------------------


@dataclass
class ObjectStore:
    """``weed mini`` with its S3 gateway on ``endpoint``; one admin identity with per-run keys."""

    service: Service
    endpoint: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)

    @classmethod
    def create(cls, run_dir: Path, weed: Path | None = None) -> ObjectStore:
        weed = weed or weed_binary()
        run_dir.mkdir(parents=True, exist_ok=True)
        data = run_dir / "data"
        data.mkdir()  # empty on every run: `weed mini` also restores saved flags from <dir>/mini.options
        access_key, secret_key = "KM" + secrets.token_hex(9).upper(), secrets.token_urlsafe(30)
        config = run_dir / "s3-identities.json"
        config.touch(mode=0o600)
        config.write_text(json.dumps({"identities": [{
            "name": "kingmaker", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
        ports = {k: free_port() for k in ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc",
                                          "s3", "s3.grpc", "admin", "admin.grpc")}
        argv = [str(weed), "mini", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
                # no phone-home: the master's anonymous usage report is on by default
                "-master.telemetry=false", "-master.telemetry.url=",
                # only what the tests use: S3 (no WebDAV, admin UI, Iceberg/Lance catalogs, legacy admin port)
                "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.port.legacy=0",
                f"-s3.config={config}", "-s3.iam.readOnly=true",
                f"-filer.localSocket={run_dir / 'filer.sock'}", f"-s3.localSocket={run_dir / 's3.sock'}",
                *(f"-{name}.port={port}" if not name.endswith(".grpc") else f"-{name[:-5]}.port.grpc={port}"
                  for name, port in ports.items())]
        endpoint = f"http://127.0.0.1:{ports['s3']}"
        store = cls(Service("seaweedfs", argv, run_dir / "weed.log", probe=lambda: False, cwd=run_dir),
                    endpoint, access_key, secret_key)
        store.service.probe = store._ready
        return store

    @property
    def env(self) -> dict[str, str]:
        """What an S3 client (boto3, s3fs/fsspec, MLflow's S3 artifact repository) needs, from the environment."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION,
                "AWS_ENDPOINT_URL": self.endpoint,  # botocore >= 1.31 and so s3fs (via aiobotocore)
                "MLFLOW_S3_ENDPOINT_URL": self.endpoint,  # MLflow's S3 artifact repository
                **NO_TELEMETRY}

    def client(self) -> Any:
        """A boto3 S3 client with explicit settings (no environment or ~/.aws involved)."""
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key,
                            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=30))

    def _ready(self) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client().list_buckets()
        except (BotoCoreError, ClientError):  # not listening yet, or the filer behind it not ready
            return False
        return True

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key under ``prefix`` (paginated)."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


# --- PostgreSQL ----------------------------------------------------------------------------------------------


@dataclass
class Postgres:
    """A throwaway cluster on 127.0.0.1:``port``, superuser ``kingmaker`` with a per-run password."""

    service: Service
    port: int
    password: str = field(repr=False)
    root: Path
    user: str = "kingmaker"

    @classmethod
    def create(cls, log_dir: Path, bin_dir: Path | None = None) -> Postgres:
        bin_dir = bin_dir or postgres_bin()
        os_user = _unprivileged_user()
        # Outside pytest's tmp folder, which is private to us: the cluster's OS user must reach it.
        root = Path(tempfile.mkdtemp(prefix="kingmaker-pg-"))
        data, sockets = root / "data", root / "run"
        password = secrets.token_urlsafe(24)
        pwfile = root / "pw"
        pwfile.write_text(password + "\n")
        sockets.mkdir()
        if os_user is not None:
            entry = pwd.getpwnam(os_user)
            for p in (root, pwfile, sockets):
                os.chown(p, entry.pw_uid, entry.pw_gid)
        log_dir.mkdir(parents=True, exist_ok=True)
        init = subprocess.run([str(bin_dir / "initdb"), "-D", str(data), "-U", cls.user, f"--pwfile={pwfile}",
                               "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8",
                               "--locale=C", "--no-sync"],
                              capture_output=True, text=True, env=_base_env(), **_as_user(os_user))
        pwfile.unlink()
        if init.returncode != 0:
            shutil.rmtree(root, ignore_errors=True)
            raise RuntimeError(f"initdb failed ({init.returncode}): {init.stderr.strip()}")
        port = free_port()
        argv = [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-c", "listen_addresses=127.0.0.1",
                "-c", f"unix_socket_directories={sockets}", "-c", "fsync=off", "-c", "full_page_writes=off",
                "-c", "synchronous_commit=off", "-c", "max_connections=50", "-c", "shared_buffers=32MB"]
        pg = cls(Service("postgresql", argv, log_dir / "postgresql.log", probe=lambda: False, cwd=root, user=os_user,
                         stop_signal=signal.SIGINT),  # "fast" shutdown: SIGTERM would wait for clients to leave
                 port, password, root)
        pg.service.probe = pg._ready
        return pg

    @property
    def env(self) -> dict[str, str]:
        """libpq reads the password from here, so URLs and command lines never carry it."""
        return {"PGPASSWORD": self.password}

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> Any:
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                               dbname=database, connect_timeout=2, autocommit=True)

    def _ready(self) -> bool:
        import psycopg

        try:
            self.connect().close()
        except psycopg.OperationalError:  # not accepting connections yet
            return False
        return True

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL (no password in it)."""
        from psycopg import sql

        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def remove(self) -> None:
        self.service.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _unprivileged_user() -> str | None:
    """Who runs the cluster: ourselves, or as root the ``postgres`` user (Debian's package creates it)."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("KINGMAKER_PG_USER", "postgres")
    try:
        pwd.getpwnam(name)
    except KeyError:
        raise StoreUnavailable(f"running as root and there is no OS user {name!r} to run PostgreSQL as "
                               "(initdb refuses root): install Debian's postgresql package or set "
                               "KINGMAKER_PG_USER") from None
    return name


# --- MLflow tracking server ----------------------------------------------------------------------------------


@dataclass
class MlflowServer:
    """``mlflow server`` on 127.0.0.1:``port``: runs and the registry in PostgreSQL, artifacts proxied to S3."""

    service: Service
    port: int

    @classmethod
    def create(cls, run_dir: Path, backend_url: str, postgres: Postgres, store: ObjectStore,
               bucket: str) -> MlflowServer:
        run_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        exe = Path(sys.executable).with_name("mlflow")
        argv = [str(exe), "server", "--host", "127.0.0.1", "--port", str(port), "--backend-store-uri", backend_url,
                "--serve-artifacts", "--artifacts-destination", f"s3://{bucket}/mlartifacts",
                # one worker is plenty for tests on 2 cores (default 4); the host check stays on, for our address
                "--workers", "1", "--allowed-hosts", f"127.0.0.1:{port},localhost:{port}"]
        env = {**store.env, **postgres.env, "MLFLOW_TMP_DIR": str(run_dir / "tmp"),
               # no background job runner (huey consumers for GenAI scorers and trace roll-ups): unused here
               "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        (run_dir / "tmp").mkdir(exist_ok=True)
        health = f"http://127.0.0.1:{port}/health"
        # ready in 17-45 s on the shared 2-core machine (mlflow is imported twice; a first start migrates the schema)
        return cls(Service("mlflow-server", argv, run_dir / "mlflow-server.log", probe=lambda: _http_ok(health),
                           env=env, cwd=run_dir, ready_timeout=240), port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """A client needs only the URL: artifacts go through the server."""
        return {"MLFLOW_TRACKING_URI": self.url, **NO_TELEMETRY}


@dataclass
class Registry:
    """A tracking server and its PostgreSQL, on a shared object store."""

    postgres: Postgres
    server: MlflowServer
    store: ObjectStore
    bucket: str

    def services(self) -> list[Service]:
        """In start order."""
        return [self.postgres.service, self.server.service]

    def stop(self) -> None:
        for s in reversed(self.services()):
            s.stop()

    def start(self) -> None:
        for s in self.services():
            s.start()


@contextlib.contextmanager
def registry(run_dir: Path, store: ObjectStore, bucket: str) -> Iterator[Registry]:
    """A new PostgreSQL cluster with an ``mlflow`` database and a tracking server on it, artifacts in
    ``bucket``; all removed afterwards, also when starting fails."""
    postgres = Postgres.create(run_dir)
    try:
        postgres.service.start()
        server = MlflowServer.create(run_dir, postgres.create_database("mlflow"), postgres, store, bucket)
        try:
            server.service.start()
            yield Registry(postgres, server, store, bucket)
        finally:
            server.service.stop()
    finally:
        postgres.remove()


def services_of(value: object) -> list[Service]:
    """The store processes behind a fixture value (for failure reports)."""
    if isinstance(value, Registry):
        return [value.store.service, *value.services()]
    service = getattr(value, "service", None)
    return [service] if isinstance(service, Service) else []


def log_files(*roots: Path) -> list[Path]:
    """Every regular file under ``roots`` whose name says it is a log (``*.log``, ``*.out``, ``*.err``)."""
    return sorted(p for r in roots for p in r.rglob("*") if p.is_file() and p.suffix in {".log", ".out", ".err"})
