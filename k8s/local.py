"""Local mode: the same controller against the local MLflow store, logs and ``kingmaker serve`` processes.

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

from k8s.state import Arms, Spec, Status, rfc3339
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


# --- status and approval ------------------------------------------------------------------------

class LocalStore:
    """`ResourceSource` and `StatusStore` over ``controller/<name>.json``; Events go to a JSON-lines file."""

    def __init__(self, folder: Path, spec: Spec, *, clock: Callable[[], float] = time.time):
        self.folder = folder
        self.spec = spec
        self.path = folder / f"{spec.name}.json"
        self.events_path = folder / f"{spec.name}.events.jsonl"
        self.clock = clock

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
        doc = self._doc()
        approved = doc.get("approvedChallengerVersion") or self.spec.approved_challenger_version
        return replace(self.spec, approved_challenger_version=approved), Status.from_dict(doc.get("status"))

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
                "regarding": {"kind": "ChampionChallenger", "name": self.spec.name}}
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
