"""A Scorer's local copy of the model version it resolved, so that it starts through a registry outage.

`ModelCache` keeps, per model reference the Scorer was pointed at (``models:/fraud-detector@champion`` or
``models:/fraud-detector/3``), the model folder it last downloaded and the `ModelRef` it resolved to::

    <root>/<name>/<alias-or-version>/model/...   the folder written by `kingmaker.models.save`
    <root>/<name>/<alias-or-version>/ref.json    {"name", "version", "run_id", "source", "alias", "cached_at"}

A slot is replaced whole: the new copy is written next to it and renamed into place, so a Scorer killed
half-way leaves the previous copy (or nothing), never a mix. The root is a volume (an ``emptyDir`` in the chart:
it survives container restarts; a ``persistentVolumeClaim`` survives rescheduling too).

`fetch` resolves and downloads through the registry and refreshes the cache; `cached` reads the slot back.
`RegistryRetry` is the Scorer's background retry while it serves from the cache (or serves nothing yet).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kingmaker import models
from kingmaker.errors import PermanentError, TemporaryError

log = logging.getLogger(__name__)

REF_FILE = "ref.json"
MODEL_DIR = "model"


@dataclass(frozen=True)
class Cached:
    """A model folder from the cache, the version it is, and when it was stored (Unix time)."""

    ref: models.ModelRef
    path: Path
    cached_at: float


@dataclass(frozen=True)
class ModelCache:
    root: Path

    def _slot(self, uri: str) -> Path:
        name, ref = models.parse_model_uri(uri)
        return self.root / name / ref

    def store(self, uri: str, ref: models.ModelRef, model_dir: Path) -> Path:
        """Copy ``model_dir`` (the version ``uri`` resolved to) into ``uri``'s slot, replacing it whole."""
        slot = self._slot(uri)
        slot.parent.mkdir(parents=True, exist_ok=True)
        tmp = slot.parent / f".{slot.name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            shutil.copytree(model_dir, tmp / MODEL_DIR)
            (tmp / REF_FILE).write_text(json.dumps({**asdict(ref), "cached_at": time.time()}))
            old = slot.parent / f".{slot.name}.{uuid.uuid4().hex[:8]}.old"
            if slot.exists():
                os.replace(slot, old)
            os.replace(tmp, slot)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return slot / MODEL_DIR

    def cached(self, uri: str) -> Cached | None:
        """``uri``'s slot, or None when there is none (or it cannot be read: it is then only logged)."""
        slot = self._slot(uri)
        try:
            doc = json.loads((slot / REF_FILE).read_text())
            cached_at = float(doc.pop("cached_at"))
            ref = models.ModelRef(**doc)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("model cache %s is unreadable (%s): ignored", slot, exc)
            return None
        return Cached(ref, slot / MODEL_DIR, cached_at)


def fetch(client: Any, uri: str, cache: ModelCache | None) -> models.FraudModel:
    """Resolve ``uri`` in the registry, download and load the version, and refresh ``cache`` with it.

    The registry unreachable -> `TemporaryError`; the reference naming nothing -> `PermanentError`."""
    name, ref_text = models.parse_model_uri(uri)
    with tempfile.TemporaryDirectory(prefix="kingmaker-scorer-") as tmp:
        ref = models.resolve(client, name, ref_text)
        model = models.load(client, ref, Path(tmp))
        if cache is not None:
            downloaded = next(p.parent for p in Path(tmp).rglob("MLmodel"))
            try:
                cache.store(uri, ref, downloaded)
            except OSError as exc:  # a full or read-only volume must not stop serving
                log.warning("could not cache %s in %s: %s", ref.uri, cache.root, exc)
    return model


def from_cache(cache: ModelCache | None, uri: str) -> tuple[models.FraudModel, float] | None:
    """The cached version of ``uri`` loaded, with when it was cached; None without a usable copy."""
    entry = cache.cached(uri) if cache is not None else None
    if entry is None:
        return None
    try:
        return models.load_local(entry.path, entry.ref), entry.cached_at
    except (PermanentError, OSError) as exc:
        log.warning("cached %s in %s cannot be loaded (%s): ignored", entry.ref.uri, entry.path, exc)
        return None


class RegistryRetry:
    """Call ``attempt()`` every ``interval`` seconds on a daemon thread until it returns without a
    `TemporaryError` (a `PermanentError` ends the retry too, logged); ``on_failure`` sees each failure."""

    def __init__(self, attempt: Callable[[], None], interval: float,
                 on_failure: Callable[[Exception], None] = lambda exc: None):
        self._attempt = attempt
        self._interval = interval
        self._on_failure = on_failure
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registry-retry", daemon=True)

    def start(self) -> RegistryRetry:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._attempt()
            except TemporaryError as exc:
                self._on_failure(exc)
                continue
            except PermanentError as exc:
                log.error("registry retry stopped: %s", exc)
            return
