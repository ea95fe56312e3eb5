"""The services' Prometheus metrics, instantiated from the catalog (`kingmaker.catalog.SERVING`).

Under ``bentoml serve`` prometheus_client runs in multiprocess mode (BentoML sets
``PROMETHEUS_MULTIPROC_DIR`` for its workers), so these metrics land in the shared files and BentoML's
``/metrics`` already exposes them, merged over workers. Outside it (in-process tests) `exposition`
returns them for the service's ``__metrics__`` hook to append. The multiprocess collector has no process
metrics (`kingmaker.catalog.RUNTIME`: CPU, memory, file descriptors), so under ``bentoml serve`` `exposition`
returns the worker's own instead; in process, BentoML's default registry already carries them.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest, values

from kingmaker.catalog import SERVING, MetricSpec, create

#: What each role exposes (the Scorer's series carry its arm; the Router's describe routing and logs).
SCORER_SPECS = tuple(s for s in SERVING if s.name.startswith(("kingmaker_scorer_", "kingmaker_predictions",
                                                             "kingmaker_score", "kingmaker_decisions")))
ROUTER_SPECS = tuple(s for s in SERVING if s not in SCORER_SPECS)


def multiprocess_mode() -> bool:
    return values.ValueClass is not values.MutexValue


class Metrics:
    """One private registry per service instance (so tests can build several)."""

    def __init__(self, specs: Iterable[MetricSpec]):
        self.registry = CollectorRegistry(auto_describe=True)
        self._metrics = {spec.name: create(spec, self.registry) for spec in specs}
        self._process = CollectorRegistry()
        ProcessCollector(registry=self._process)

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
        return generate_latest(self._process if multiprocess_mode() else self.registry).decode()


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
