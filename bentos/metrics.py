"""The services' Prometheus metrics, instantiated from the catalog (`kingmaker.catalog.SERVING`).

Under ``bentoml serve`` prometheus_client runs in multiprocess mode (BentoML sets
``PROMETHEUS_MULTIPROC_DIR`` for its workers), so these metrics land in the shared files and BentoML's
``/metrics`` already exposes them, merged over workers. Outside it (in-process tests) `exposition`
returns them for the service's ``__metrics__`` hook to append. The multiprocess collector has no process
metrics (`kingmaker.catalog.RUNTIME`: CPU, memory, file descriptors), so under ``bentoml serve`` `exposition`
returns the worker's own instead; in process, BentoML's default registry already carries them.

BentoML keeps the multiprocess files in ``$BENTOML_HOME/prometheus_multiproc_dir`` and empties it whenever a
server starts, so each ``bentoml serve`` needs its own ``BENTOML_HOME`` (`bentos.procs` gives each one its own;
the chart points it at the pod's own /tmp). `exposition` checks for servers that share it anyway and says so
in the log (`shared_writers`).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest, values

from kingmaker.catalog import SERVING, MetricSpec, create

#: What each role exposes (the Scorer's series carry its arm; the Router's describe routing and logs).
SCORER_SPECS = tuple(s for s in SERVING if s.name.startswith(("kingmaker_scorer_", "kingmaker_predictions",
                                                             "kingmaker_score", "kingmaker_decisions")))
ROUTER_SPECS = tuple(s for s in SERVING if s not in SCORER_SPECS)


log = logging.getLogger(__name__)
_DB_FILE = re.compile(r"_(\d+)\.db$")
_SHARED_CHECK_S = 60.0


def shared_writers(directory: Path, own: set[int]) -> set[int]:
    """The live processes other than ``own`` whose metric files are in the multiprocess ``directory``."""
    import psutil

    pids = {int(m.group(1)) for f in directory.glob("*.db") if (m := _DB_FILE.search(f.name))}
    return {pid for pid in pids - own if psutil.pid_exists(pid)}


def server_family() -> set[int]:
    """This worker and the ``bentoml serve`` process that started it, with all its workers."""
    import psutil

    try:
        parent = psutil.Process(os.getppid())
        return {parent.pid, os.getpid(), *(c.pid for c in parent.children(recursive=True))}
    except psutil.NoSuchProcess:
        return {os.getpid()}


def multiprocess_mode() -> bool:
    return values.ValueClass is not values.MutexValue


class Metrics:
    """One private registry per service instance (so tests can build several)."""

    def __init__(self, specs: Iterable[MetricSpec]):
        self.registry = CollectorRegistry(auto_describe=True)
        self._metrics = {spec.name: create(spec, self.registry) for spec in specs}
        self._process = CollectorRegistry()
        ProcessCollector(registry=self._process)
        self._next_shared_check = 0.0

    def counter(self, name: str) -> Counter:
        metric = self._metrics[name]
        assert isinstance(metric, Counter), name
        return metric

    def histogram(self, name: str) -> Histogram:
        metric = self._metrics[name]
        assert isinstance(metric, Histogram), name
        return metric

    def gauge(self, name: str) -> Gauge:
        metric = self._metrics[name]
        assert isinstance(metric, Gauge), name
        return metric

    def exposition(self) -> str:
        """Text for BentoML's ``__metrics__`` hook: what BentoML's own exposition lacks (see the module doc)."""
        if multiprocess_mode():
            self._check_shared()
            return generate_latest(self._process).decode()
        return generate_latest(self.registry).decode()

    def _check_shared(self) -> None:
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not directory or time.monotonic() < self._next_shared_check:
            return
        self._next_shared_check = time.monotonic() + _SHARED_CHECK_S
        others = shared_writers(Path(directory), server_family())
        if others:
            log.warning("the Prometheus multiprocess folder %s is shared with another server (pids %s): /metrics "
                        "mixes its series with ours, and a server starting there wipes them; give each bentoml serve "
                        "its own BENTOML_HOME", directory, ", ".join(map(str, sorted(others))))


def observe_many(child: Histogram, values_: npt.NDArray[np.float64]) -> None:
    """``child.observe(v)`` for every value, in one pass: bucket counts are computed with NumPy.

    prometheus_client has no bulk observe and 10,000 single observes cost ~30 ms, so this adds the
    counts to the child's buckets directly (its bucket counts are per bucket, cumulated when
    collected). Falls back to the loop if the client's internals ever change.
    """
    bounds = getattr(child, "_upper_bounds", None)
    buckets = getattr(child, "_buckets", None)
    total = getattr(child, "_sum", None)
    if bounds is None or buckets is None or total is None or len(buckets) != len(bounds):
        for v in values_:
            child.observe(float(v))
        return
    idx = np.searchsorted(np.asarray(bounds[:-1], dtype=np.float64), values_, side="left")
    counts = np.bincount(idx, minlength=len(bounds))
    for i in np.flatnonzero(counts):
        buckets[i].inc(int(counts[i]))
    total.inc(float(np.sum(values_)))
