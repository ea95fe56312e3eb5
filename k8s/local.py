"""Local mode: the same controller against the local MLflow store, logs and ``kingmaker serve`` processes.

The resource's spec comes from a ``ChampionChallenger`` YAML (``kingmaker promote --policy FILE``), re-read
whenever the file changes (`PolicyFile`), or from the CRD defaults.

Files (all under ``$KINGMAKER_HOME``):

``controller/<name>.json``
    The resource's status (same fields as the CRD's ``status``) and a local approval
    (``approvedChallengerVersion``, written by ``kingmaker promote --approve``). Written atomically.
``controller/<name>.events.jsonl``
    One JSON line per Event (what Kubernetes mode sends to the API server).
``controller/<name>.lock``
    ``flock``-ed by the one controller acting on this resource (the local stand-in for the Lease).
``serving/router.yaml``
    The Router's hot-reloaded traffic file (`kingmaker.router_config`): the controller sets ``mode`` and
    ``challenger_weight`` and keeps every other key as it finds it.
``serving/arms.yaml``
    **The contract with local serving** (`kingmaker.arms`): the model version each arm must serve.
    The controller writes it; ``kingmaker serve`` watches it and re-points an arm whose version changed
    (start a Scorer on the new version, wait until ready, switch the Router, drain the old one).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import yaml

from k8s.state import Arms, Spec, Status, parse_spec, rfc3339
from kingmaker import arms as arms_file
from kingmaker.errors import PermanentError, TemporaryError
from kingmaker.roles import Mode

log = logging.getLogger(__name__)

ROUTER_FILE = "router.yaml"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --- the spec ------------------------------------------------------------------------------------

def read_spec(path: Path, *, default_name: str, name: str | None = None) -> Spec:
    """A ``ChampionChallenger`` YAML file -> `Spec` (`k8s.state.parse_spec`); ``name`` overrides its name."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PermanentError(f"cannot read policy {path}: {exc}") from exc
    spec = parse_spec(doc, default_name=default_name)
    return replace(spec, name=name) if name else spec


class PolicyFile:
    """The spec local mode acts on, from a ``ChampionChallenger`` YAML file, re-read whenever the file changes.

    `current` looks at the file's mtime, size and inode on every call and parses it again when they changed.
    The first read must succeed (a bad file at start is a `PermanentError`). Later, an edit that does not
    parse — bad YAML, a bad field, or another resource name or model (the store, the registry and serving
    were set up for the first) — keeps the last good spec: one error line is logged and ``on_reload`` is
    called with ``"invalid"`` once per bad version of the file; a good edit calls it with ``"ok"``.
    """

    def __init__(self, path: Path, *, default_name: str, name: str | None = None,
                 on_reload: Callable[[str, str], None] = lambda outcome, message: None):
        self.path = path
        self.default_name = default_name
        self.name = name
        self.on_reload = on_reload
        self._seen = self._stamp()
        self._spec = read_spec(path, default_name=default_name, name=name)

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _read(self) -> Spec:
        spec = read_spec(self.path, default_name=self.default_name, name=self.name)
        for what, old, new in (("metadata.name", self._spec.name, spec.name),
                               ("spec.modelName", self._spec.model_name, spec.model_name)):
            if old != new:
                raise PermanentError(f"{what} changed from {old!r} to {new!r}: restart the controller for another "
                                     f"resource")
        return spec

    def current(self) -> Spec:
        """The spec of the file as it is now, or the last good one if the file's new content is invalid."""
        stamp = self._stamp()
        if stamp == self._seen:
            return self._spec
        self._seen = stamp
        try:
            self._spec = self._read()
        except PermanentError as exc:
            message = f"policy {self.path} rejected, keeping the last good policy: {exc}"
            log.error("%s", message)
            self.on_reload("invalid", message)
        else:
            log.info("policy %s reloaded", self.path)
            self.on_reload("ok", f"policy {self.path} reloaded")
        return self._spec


# --- status and approval ------------------------------------------------------------------------

class LocalStore:
    """`ResourceSource` and `StatusStore` over ``controller/<name>.json``; Events go to a JSON-lines file.

    ``spec`` is fixed, or a `PolicyFile` that `load` re-reads (so every reconcile sees the current policy).
    """

    def __init__(self, folder: Path, spec: Spec | PolicyFile, *, clock: Callable[[], float] = time.time):
        self.folder = folder
        self.source = spec
        self.name = self.spec.name
        self.path = folder / f"{self.name}.json"
        self.events_path = folder / f"{self.name}.events.jsonl"
        self.clock = clock

    @property
    def spec(self) -> Spec:
        return self.source.current() if isinstance(self.source, PolicyFile) else self.source

    def _doc(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise PermanentError(f"cannot read {self.path}: {exc}") from exc
        if not isinstance(doc, dict):
            raise PermanentError(f"{self.path}: expected a JSON object")
        return doc

    def _write(self, doc: dict[str, Any]) -> None:
        _write_atomic(self.path, json.dumps(doc, indent=1, sort_keys=True, allow_nan=False))

    def status(self) -> Status:
        return Status.from_dict(self._doc().get("status"))

    def load(self) -> tuple[Spec, Status]:
        spec, doc = self.spec, self._doc()
        approved = doc.get("approvedChallengerVersion") or spec.approved_challenger_version
        return replace(spec, approved_challenger_version=approved), Status.from_dict(doc.get("status"))

    def save(self, status: Status) -> None:
        doc = self._doc()
        doc["status"] = status.to_dict()
        self._write(doc)

    def approve(self, version: str) -> None:
        doc = self._doc()
        doc["approvedChallengerVersion"] = version
        self._write(doc)

    def event(self, type_: str, reason: str, message: str) -> None:
        line = {"time": rfc3339(self.clock()), "type": type_, "reason": reason, "message": message,
                "regarding": {"kind": "ChampionChallenger", "name": self.name}}
        try:
            self.events_path.parent.mkdir(parents=True, exist_ok=True)
            with self.events_path.open("a") as fh:
                fh.write(json.dumps(line) + "\n")
        except OSError as exc:
            log.warning("could not record event %s: %s", reason, exc)

    def events(self) -> list[dict[str, Any]]:
        try:
            return [json.loads(x) for x in self.events_path.read_text().splitlines() if x.strip()]
        except FileNotFoundError:
            return []


class LocalLock:
    """An exclusive, non-blocking ``flock`` on ``path``: at most one local controller acts on a resource."""

    def __init__(self, path: Path):
        self.path = path
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = self.path.open("a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise TemporaryError(f"another controller (pid {holder}) is acting on this resource "
                                 f"({self.path}); stop it or wait") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    @property
    def held(self) -> bool:
        return self._fh is not None

    def __enter__(self) -> LocalLock:
        self.acquire()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


# --- serving ------------------------------------------------------------------------------------

@dataclass
class LocalServing:
    """`ServingTarget` over ``serving/arms.yaml`` (what each arm serves) and ``serving/router.yaml``."""

    folder: Path
    model_name: str
    clock: Callable[[], float] = time.time

    @property
    def arms_path(self) -> Path:
        return self.folder / arms_file.FILE_NAME

    @property
    def router_path(self) -> Path:
        return self.folder / ROUTER_FILE

    def arms(self) -> tuple[Arms | None, int]:
        """The arms file's versions (None if there is none yet) and its generation."""
        current = arms_file.read(self.arms_path)
        return (Arms(current.champion, current.challenger) if current.champion else None), current.generation

    def point(self, arms: Arms) -> bool:
        current, generation = self.arms()
        if current == arms:
            return False
        arms_file.write(self.arms_path, self.model_name, arms.champion, arms.challenger, generation=generation + 1,
                        now=datetime.fromtimestamp(self.clock(), UTC))
        log.info("arms: champion -> v%s, challenger -> %s (%s)", arms.champion,
                 "none" if arms.challenger is None else f"v{arms.challenger}", self.arms_path)
        return True

    def route(self, mode: Mode, challenger_weight: float) -> bool:
        from kingmaker import router_config

        current = router_config.load(self.router_path) if self.router_path.exists() else router_config.RouterConfig()
        wanted = replace(current, mode=mode, challenger_weight=challenger_weight)
        if wanted == current and self.router_path.exists():
            return False
        router_config.dump(wanted, self.router_path)
        log.info("router: mode %s, challenger weight %g (%s)", mode.value, challenger_weight, self.router_path)
        return True
