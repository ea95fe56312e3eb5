"""The latest drift result that concerns the arms: the `k8s.observe.DriftSource` source.

`FileDrift` reads the drift job's ``drift.json`` files; `PrometheusDrift` the gauges the job pushes,
through Prometheus. Either gives the arm-vs-arm score PSI only for exactly the pair under test and only
while fresh; otherwise it is missing, which blocks a promotion.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from k8s.decide import DriftSummary
from k8s.sources.prometheus import Querier, selector
from k8s.state import Pair
from kingmaker.catalog import CATALOG
from kingmaker.errors import KingmakerError

log = logging.getLogger(__name__)


def _iso_unix(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _fresh(computed_at: float | None, now: float, max_age: float | None) -> bool:
    return computed_at is not None and (max_age is None or now - computed_at <= max_age)


def summary_from_document(doc: Mapping[str, Any], pair: Pair, now: float,
                          max_age_seconds: float | None) -> DriftSummary:
    """A ``drift.json`` document (`drift_service.document`, format 1) -> `DriftSummary` for ``pair``.

    The score PSI counts only when the document compared exactly this champion and challenger and is not
    older than ``max_age_seconds``; otherwise it is None (missing), which blocks a promotion.
    """
    context = doc.get("context") or {}
    computed_at = _iso_unix(context.get("created"))
    features = tuple(str(f) for f in doc.get("drifted_features") or ())
    arms = doc.get("arms") or {}
    psi_doc = arms.get("psi") or {}
    psi = psi_doc.get("score")
    same_pair = (str(arms.get("champion_version")), str(arms.get("challenger_version"))) == \
        (pair.champion, str(pair.challenger))
    usable = isinstance(psi, (int, float)) and math.isfinite(psi) and same_pair \
        and _fresh(computed_at, now, max_age_seconds)
    return DriftSummary(score_psi=float(psi) if usable and psi is not None else None, drifted_features=features, computed_at=computed_at)


@dataclass(frozen=True)
class FileDrift:
    """The newest ``drift.json`` in ``folder`` or its sub-folders (the job writes one folder per run)."""

    folder: Path
    max_age_seconds: float | None = 2 * 24 * 3600.0

    def _documents(self) -> list[tuple[float, Path, dict[str, Any]]]:
        found = []
        for path in [self.folder / "drift.json", *self.folder.glob("*/drift.json")]:
            try:
                doc = json.loads(path.read_text())
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:
                log.warning("ignoring unreadable drift result %s: %s", path, exc)
                continue
            if not isinstance(doc, dict):
                continue
            ctx = doc.get("context") or {}
            when = _iso_unix(ctx.get("created")) or path.stat().st_mtime
            found.append((when, path, doc))
        return sorted(found, key=lambda item: (item[0], str(item[1])))

    def latest(self, pair: Pair, now: float) -> DriftSummary | None:
        docs = self._documents()
        if not docs:
            return None
        _, path, doc = docs[-1]
        result = summary_from_document(doc, pair, now, self.max_age_seconds)
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
