"""The latest drift result that concerns the arms: the `k8s.observe.DriftSource` source.

`FileDrift` reads the drift job's ``drift.json`` files; `PrometheusDrift` the gauges the job pushes,
through Prometheus. Either gives the arm-vs-arm score PSI only for exactly the pair under test and only
while fresh; otherwise it is missing, which blocks a promotion.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from k8s.decide import DriftSummary
from k8s.sources.prometheus import Querier, selector
from k8s.state import Pair
from kingmaker import drift_result
from kingmaker.catalog import CATALOG
from kingmaker.drift_result import DriftDocument
from kingmaker.errors import KingmakerError, PermanentError

log = logging.getLogger(__name__)


def _fresh(computed_at: float | None, now: float, max_age: float | None) -> bool:
    return computed_at is not None and (max_age is None or now - computed_at <= max_age)


def summary(doc: DriftDocument, pair: Pair, now: float, max_age_seconds: float | None) -> DriftSummary:
    """A drift result (`kingmaker.drift_result`) -> `DriftSummary` for ``pair``.

    The score PSI counts only when the document compared exactly this champion and challenger and is not
    older than ``max_age_seconds``; otherwise it is None (missing), which blocks a promotion.
    """
    computed_at = doc.context.created.timestamp()
    arms = doc.arms
    same_pair = arms is not None and (arms.champion_version, arms.challenger_version) == (pair.champion, pair.challenger)
    psi = doc.score_psi
    usable = psi is not None and same_pair and _fresh(computed_at, now, max_age_seconds)
    return DriftSummary(score_psi=psi if usable else None, drifted_features=doc.drifted_features,
                        computed_at=computed_at)


@dataclass(frozen=True)
class FileDrift:
    """The newest ``drift.json`` in ``folder`` or its sub-folders (by default the job writes one folder per run).

    A file that cannot be read — half written, not JSON, or of a drift result format this code does not
    know (`kingmaker.drift_result.from_json` says which) — is skipped with a warning; newest is by the
    document's ``context.created``.
    """

    folder: Path
    max_age_seconds: float | None = 2 * 24 * 3600.0

    def _documents(self) -> list[tuple[DriftDocument, Path]]:
        found = []
        for path in [self.folder / drift_result.FILE_NAME, *self.folder.glob(f"*/{drift_result.FILE_NAME}")]:
            if not path.is_file():
                continue
            try:
                found.append((drift_result.read(path), path))
            except PermanentError as exc:
                log.warning("ignoring drift result: %s", exc)
        return sorted(found, key=lambda item: (item[0].context.created.timestamp(), str(item[1])))

    def latest(self, pair: Pair, now: float) -> DriftSummary | None:
        docs = self._documents()
        if not docs:
            return None
        doc, path = docs[-1]
        result = summary(doc, pair, now, self.max_age_seconds)
        if result.score_psi is None:
            log.info("drift result %s gives no score PSI for champion %s / challenger %s (other pair, stale "
                     "or too few rows)", path, pair.champion, pair.challenger)
        return result


class PrometheusDrift:
    """The gauges the drift job pushes (`kingmaker.catalog.DRIFT`), read back through Prometheus."""

    def __init__(self, querier: Querier, *, max_age_seconds: float | None = 2 * 24 * 3600.0, selector: str = ""):
        self.querier = querier
        self.max_age_seconds = max_age_seconds
        self.selector = selector

    def latest(self, pair: Pair, now: float) -> DriftSummary | None:
        psi_name = CATALOG["kingmaker_drift_arms_score_psi"].name
        done_name = CATALOG["kingmaker_drift_last_success_timestamp_seconds"].name
        sev_name = CATALOG["kingmaker_drift_feature_severity"].name
        try:
            computed_at = self.querier.query(f"max({done_name}{selector(self.selector)})")
            psi = self.querier.query(f"max({psi_name}" + selector(
                self.selector, f'champion_version="{pair.champion}"', f'challenger_version="{pair.challenger}"') + ")")
            drifted = self.querier.series(f"max by (feature) ({sev_name}{selector(self.selector)}) >= 1")
        except KingmakerError as exc:
            log.warning("drift result unavailable: %s", exc)
            return None
        features = tuple(sorted(labels.get("feature", "") for labels, _ in drifted if labels.get("feature")))
        fresh = _fresh(computed_at, now, self.max_age_seconds)
        return DriftSummary(score_psi=psi if fresh else None, drifted_features=features, computed_at=computed_at)


class NoDrift:
    def latest(self, pair: Pair, now: float) -> DriftSummary | None:
        return None
