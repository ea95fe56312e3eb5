"""The namespace's ChampionChallengers, kept current by a watch: the `k8s.controller.ResourceFeed` of
Kubernetes mode, so the loop reacts to a spec change within moments and never polls the API server.

`ResourceWatch` does what client-go's reflector does, with the official client's watch stream
(`k8s.kube.Kube.watch`):

- list once, keeping the list's ``resourceVersion``; then watch from it, with bookmarks, so a quiet
  namespace still moves the resourceVersion on;
- every ADDED / MODIFIED / DELETED event updates the cache (name -> object) and wakes `wait`;
- the server ends each watch after ``timeout_seconds``: resume from the last resourceVersion seen;
- 410 Gone (that resourceVersion is older than the server keeps): list again;
- any other failure (API server down, 5xx, 403, a connection cut): keep the cache, wait with exponential
  backoff (``backoff[0]`` doubling up to ``backoff[1]`` seconds; reset once a watch delivers or ends on
  time), resume.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from k8s.kube import Gone, Kube
from kingmaker.errors import KingmakerError

log = logging.getLogger(__name__)


def _name(doc: dict[str, Any]) -> str:
    return str((doc.get("metadata") or {}).get("name"))


def _version(doc: dict[str, Any]) -> str:
    return str((doc.get("metadata") or {}).get("resourceVersion") or "")


class ResourceWatch:
    """List + watch into a cache. `run` in a thread; `resources` and `wait` from the loop."""

    def __init__(self, kube: Kube, *, timeout_seconds: int = 300, backoff: tuple[float, float] = (1.0, 30.0)):
        self.kube = kube
        self.timeout_seconds = timeout_seconds
        self.backoff = backoff
        self.synced = threading.Event()  # set once the first list arrived
        self._lock = threading.Lock()
        self._docs: dict[str, dict[str, Any]] = {}
        self._resource_version = ""  # "" = list (again) before watching
        self._changed = threading.Event()

    def resources(self) -> list[dict[str, Any]]:
        """The resources as last seen (empty before the first list)."""
        with self._lock:
            return list(self._docs.values())

    def wait(self, timeout: float) -> bool:
        """Block until the resources changed (or `wake`) or ``timeout`` seconds passed; True if woken."""
        woke = self._changed.wait(timeout)
        self._changed.clear()
        return woke

    def wake(self) -> None:
        """Wake `wait` now (e.g. on shutdown)."""
        self._changed.set()

    def run(self, stop: threading.Event) -> None:
        """List and watch until ``stop``; never raises."""
        delay = self.backoff[0]
        while not stop.is_set():
            try:
                if not self._resource_version:
                    self._relist()
                for kind, doc in self.kube.watch(self._resource_version, self.timeout_seconds):
                    self._apply(kind, doc)
                    delay = self.backoff[0]
                    if stop.is_set():
                        return
                delay = self.backoff[0]  # the server ended the watch on time: resume from the resourceVersion
            except Gone as exc:
                log.info("watch: %s; listing again", exc)
                self._resource_version = ""
            except KingmakerError as exc:
                log.warning("watch: %s; retrying in %gs", exc, delay)
                stop.wait(delay)
                delay = min(2 * delay, self.backoff[1])

    def _relist(self) -> None:
        items, version = self.kube.list_resources()
        with self._lock:
            self._docs = {_name(doc): doc for doc in items}
            self._resource_version = version
        self.synced.set()
        self._changed.set()
        log.info("watch: %d %s at resourceVersion %s", len(items), "resource" if len(items) == 1 else "resources",
                 version)

    def _apply(self, kind: str, doc: dict[str, Any]) -> None:
        with self._lock:
            self._resource_version = _version(doc) or self._resource_version
            if kind in ("ADDED", "MODIFIED"):
                self._docs[_name(doc)] = doc
            elif kind == "DELETED":
                self._docs.pop(_name(doc), None)
            else:  # BOOKMARK: only the resourceVersion moved
                return
        self._changed.set()
