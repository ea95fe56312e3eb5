"""The Router's traffic configuration, re-read when its file changes (no restart).

The file's format, reader and writer are `kingmaker.router_config`; this module only watches it. A file
that fails to parse or validate at start-up is an error; on a later reload it is rejected, logged and
counted, and the last good configuration stays in force.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from kingmaker.errors import PermanentError
from kingmaker.router_config import RouterConfig, load

log = logging.getLogger(__name__)


class ConfigWatcher:
    """The current `RouterConfig`, re-read when the file changes.

    `current()` costs one dict lookup; at most every ``interval_s`` it also ``stat``s the file (following
    symlinks, so ConfigMap swaps are seen) and re-reads it when its inode, size or mtime changed.
    ``on_reload(outcome, cfg)`` is told about every reload: ``"ok"`` or ``"invalid"``.
    """

    def __init__(self, path: Path | None, *, interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 on_reload: Callable[[str, RouterConfig], None] | None = None):
        self.path = path
        self.interval_s = interval_s
        self._clock = clock
        self._on_reload = on_reload
        self._next_check = clock() + interval_s
        self._signature = self._stat()
        self._config = load(path) if path is not None else RouterConfig()
        self.last_error: str | None = None

    def _stat(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    @property
    def public_error(self) -> str | None:
        """`last_error` as a client may see it (``/routing``): the file's name, not its path."""
        if self.last_error is None or self.path is None:
            return self.last_error
        return self.last_error.replace(str(self.path), self.path.name)

    def current(self) -> RouterConfig:
        if self.path is not None and self._clock() >= self._next_check:
            self.check()
        return self._config

    def check(self) -> bool:
        """Re-read the file if it changed. True when a new configuration was applied."""
        self._next_check = self._clock() + self.interval_s
        signature = self._stat()
        if signature == self._signature or self.path is None:
            return False
        self._signature = signature
        if signature is None:
            self.last_error = f"router config {self.path} disappeared; keeping the last good configuration"
            log.error(self.last_error)
            if self._on_reload:
                self._on_reload("invalid", self._config)
            return False
        try:
            cfg = load(self.path)
        except PermanentError as exc:
            self.last_error = f"{exc}; keeping the last good configuration"
            log.error(self.last_error)
            if self._on_reload:
                self._on_reload("invalid", self._config)
            return False
        changed = cfg != self._config
        self._config = cfg
        self.last_error = None
        if changed:
            log.info("router config reloaded from %s: %s", self.path, cfg.as_dict())
        if self._on_reload:
            self._on_reload("ok", cfg)
        return changed
