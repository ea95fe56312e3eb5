"""Observe: everything `k8s.decide.decide` looks at, read from the world into plain values.

Three sources, each behind a one- or two-method protocol (Flagger's ``RunQuery``/``IsOnline`` style) so
tests hand in values and production reads the real thing:

- `LabelledWindows` — both arms' logged predictions joined with their labels (`LogWindows` reads the
  prediction and label logs of `kingmaker.logs`);
- `GuardrailSource` — the challenger's error rate and p99 latency (`PrometheusGuardrails` asks the
  Prometheus HTTP API through `PrometheusAPI`). An unreachable Prometheus gives readings of None, never an
  exception: `decide` then holds instead of promoting;
- `DriftSource` — the latest arm-vs-arm score PSI (`FileDrift` reads the drift job's ``drift.json``;
  `PrometheusDrift` the gauges the job pushes).

`observe` puts them together into `Observations`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa

from k8s.decide import ArmRows, DriftSummary, GuardrailReadings, Observations
from k8s.state import Pair, Spec
from kingmaker import logs
from kingmaker.catalog import CATALOG
from kingmaker.errors import KingmakerError, PermanentError, TemporaryError
from kingmaker.roles import Arm, Mode

log = logging.getLogger(__name__)


# --- protocols --------------------------------------------------------------------------------

class LabelledWindows(Protocol):
    def rows(self, pair: Pair, mode: Mode, amount_feature: str | None) -> tuple[ArmRows, ArmRows]:
        """(champion, challenger) rows of the pair's experiment, labels joined (NaN = no label yet)."""
        ...


class GuardrailSource(Protocol):
    def readings(self, pair: Pair) -> GuardrailReadings:
        """The challenger's serving health now; a reading that cannot be had is None."""
        ...


class DriftSource(Protocol):
    def latest(self, pair: Pair, now: float) -> DriftSummary | None:
        """The newest drift result for this pair (score PSI None when missing, stale or for another pair)."""
        ...


class Querier(Protocol):
    """A PromQL endpoint: one number, or every series of an instant vector."""

    def query(self, promql: str) -> float | None: ...

    def series(self, promql: str) -> list[tuple[dict[str, str], float]]: ...


@dataclass(frozen=True)
class Sources:
    windows: LabelledWindows
    guardrails: GuardrailSource
    drift: DriftSource


def observe(sources: Sources, spec: Spec, pair: Pair, now: float) -> Observations:
    """Read the three sources for ``pair`` into the values `decide` takes."""
    if pair.challenger is None:
        raise PermanentError("observe: there is no challenger to compare")
    mode = spec.traffic.mode
    champion, challenger = sources.windows.rows(pair, mode, spec.policy.cost.amount_feature)
    return Observations(now=now, mode=mode, challenger_weight=spec.traffic.challenger_weight,
                        champion=champion, challenger=challenger, guardrails=sources.guardrails.readings(pair),
                        drift=sources.drift.latest(pair, now))


# --- labelled windows from the logs -----------------------------------------------------------

_COLUMNS = ("request_id", "ts", "arm", "mode", "model_version", "score")


def _unix(column: pd.Series) -> np.ndarray:
    """Timestamps (tz-aware or naive UTC) -> float unix seconds."""
    stamps = pd.to_datetime(column, utc=True).dt.as_unit("us")
    return stamps.astype("int64").to_numpy(dtype=np.float64) / 1e6


def _empty(version: str, with_amount: bool) -> ArmRows:
    nothing: list[float] = []
    return ArmRows.of(version, ts=nothing, score=nothing, label=nothing, label_ts=nothing,
                      amount=nothing if with_amount else None, request_id=[])


def _arm_rows(version: str, frame: pd.DataFrame, amount: str | None) -> ArmRows:
    return ArmRows.of(
        version, ts=frame["t"].to_numpy(np.float64), score=frame["score"].to_numpy(np.float64),
        label=frame["label"].to_numpy(np.float64), label_ts=frame["label_t"].to_numpy(np.float64),
        amount=None if amount is None else frame[amount].to_numpy(np.float64),
        request_id=frame["request_id"].astype(str).to_numpy(),
    )


@dataclass(frozen=True)
class LogWindows:
    """Both arms' rows of one experiment from the prediction log, joined with the label log.

    Rows count when they were logged in the current ``mode`` by the pair's versions on their arms
    (``model_version`` is the resolved version the Scorer answered with), from the challenger's first row
    on: the experiment starts when the challenger starts answering. Shadow mode pairs the arms on request
    id (each request once, in prediction-time order; both arms carry the champion row's time). A request
    logged twice on one arm counts once. ``since`` bounds the read for very long logs (it also bounds the
    test's sequence, so leave it None unless the log outgrows memory).
    """

    predictions_url: str
    labels_url: str
    since: datetime | None = None

    def _predictions(self, amount_column: str | None) -> tuple[pd.DataFrame, str | None]:
        columns = list(_COLUMNS)
        if amount_column is not None:
            try:
                return logs.read_predictions(self.predictions_url, since=self.since,
                                             columns=[*columns, amount_column]), amount_column
            except (pa.ArrowInvalid, KeyError):
                log.warning("prediction log has no column %s: missed frauds cost the constant", amount_column)
        return logs.read_predictions(self.predictions_url, since=self.since, columns=columns), None

    def rows(self, pair: Pair, mode: Mode, amount_feature: str | None) -> tuple[ArmRows, ArmRows]:
        if pair.challenger is None:
            raise PermanentError("no challenger version to read rows for")
        wanted = None if amount_feature is None else logs.feature_column(amount_feature)
        try:
            preds, amount = self._predictions(wanted)
            labels = logs.read_labels(self.labels_url)
        except (OSError, pa.ArrowException) as exc:
            raise TemporaryError(f"cannot read the prediction/label logs: {exc}") from exc
        if preds.empty:
            return _empty(pair.champion, wanted is not None), _empty(pair.challenger, wanted is not None)
        preds = preds[preds["mode"] == mode.value]
        version = preds["model_version"].astype(str)
        champion = preds[(preds["arm"] == Arm.CHAMPION.value) & (version == pair.champion)]
        challenger = preds[(preds["arm"] == Arm.CHALLENGER.value) & (version == pair.challenger)]
        if challenger.empty:
            return _empty(pair.champion, wanted is not None), _empty(pair.challenger, wanted is not None)
        champion, challenger = (self._joined(f, labels) for f in (champion, challenger))
        if mode is Mode.SHADOW:
            return self._paired(pair, champion, challenger, amount)
        start = challenger["t"].min()
        champion = champion[champion["t"] >= start]
        return _arm_rows(pair.champion, champion, amount), _arm_rows(pair.challenger, challenger, amount)

    @staticmethod
    def _joined(frame: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
        frame = frame.assign(t=_unix(frame["ts"]), request_id=frame["request_id"].astype(str))
        frame = frame.sort_values(["t", "request_id"], kind="stable").drop_duplicates("request_id", keep="first")
        if labels.empty:
            return frame.assign(label=np.nan, label_t=np.nan)
        lab = pd.DataFrame({"request_id": labels["request_id"].astype(str),
                            "label": labels["label"].astype(np.float64), "label_t": _unix(labels["label_ts"])})
        return frame.merge(lab, on="request_id", how="left", validate="one_to_one")

    @staticmethod
    def _paired(pair: Pair, champion: pd.DataFrame, challenger: pd.DataFrame,
                amount: str | None) -> tuple[ArmRows, ArmRows]:
        assert pair.challenger is not None
        both = champion.merge(challenger[["request_id", "score"]], on="request_id", suffixes=("", "_b"),
                              validate="one_to_one")
        both = both.sort_values(["t", "request_id"], kind="stable")
        challenger_side = both.assign(score=both["score_b"])
        return _arm_rows(pair.champion, both, amount), _arm_rows(pair.challenger, challenger_side, amount)


# --- Prometheus -------------------------------------------------------------------------------

class PrometheusAPI:
    """The instant-query endpoint of the Prometheus HTTP API (``GET /api/v1/query``), with timeouts.

    Transport failures and 5xx answers raise `TemporaryError`; a query Prometheus rejects (4xx) raises
    `PermanentError`. An empty result or NaN is None: no data is not zero.
    """

    def __init__(self, url: str, *, timeout: float = 5.0, headers: Mapping[str, str] | None = None,
                 transport: Any = None):
        import httpx

        self.url = url.rstrip("/")
        self._httpx = httpx
        self._client = httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout),
                                    headers=dict(headers or {}), transport=transport)

    def close(self) -> None:
        self._client.close()

    def _data(self, promql: str) -> dict[str, Any]:
        httpx = self._httpx
        try:
            resp = self._client.get("/api/v1/query", params={"query": promql})
        except httpx.HTTPError as exc:
            raise TemporaryError(f"Prometheus at {self.url} unreachable: {exc}") from exc
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if resp.status_code >= 500 or resp.status_code == 429:
            raise TemporaryError(f"Prometheus at {self.url} answered {resp.status_code}: {body.get('error', '')}")
        if resp.status_code >= 400 or body.get("status") != "success":
            raise PermanentError(f"Prometheus rejected {promql!r}: {body.get('errorType', resp.status_code)} "
                                 f"{body.get('error', '')}".rstrip())
        data = body.get("data")
        if not isinstance(data, dict):
            raise TemporaryError(f"Prometheus at {self.url} sent no data for {promql!r}")
        return data

    def series(self, promql: str) -> list[tuple[dict[str, str], float]]:
        data = self._data(promql)
        kind, result = data.get("resultType"), data.get("result")
        if kind == "scalar":
            return [({}, float(result[1]))]  # type: ignore[index]
        if kind != "vector":
            raise PermanentError(f"{promql!r} gives a {kind}, not an instant vector")
        return [(dict(item.get("metric", {})), float(item["value"][1])) for item in result or []]

    def query(self, promql: str) -> float | None:
        found = [(labels, v) for labels, v in self.series(promql) if not math.isnan(v)]
        if not found:
            return None
        if len(found) > 1:
            raise PermanentError(f"{promql!r} gives {len(found)} series; aggregate it to one")
        return found[0][1]


def _selector(extra: str, *terms: str) -> str:
    return "{" + ",".join([*terms, *([extra] if extra else [])]) + "}"


@dataclass(frozen=True)
class GuardrailQueries:
    """The PromQL behind each guardrail, from the Router's view of the challenger arm (`kingmaker.catalog`).

    Error rate: the challenger's failed calls (timeout, connect error, 5xx, unreadable answer) over the
    calls made (4xx rejections are the request's fault and count as made, skipped shadow calls and an
    open circuit are not calls). p99 latency: of the Router's calls to the challenger. Both are scoped to
    the challenger **version** under test (``model_version`` label), so a predecessor's calls inside the
    window never count against it. ``selector`` adds label matchers (e.g. ``namespace="fraud"``) when one
    Prometheus watches several installations.
    """

    window: str = "10m"
    selector: str = ""

    def _terms(self, version: str | None) -> tuple[str, ...]:
        arm = f'arm="{Arm.CHALLENGER.value}"'
        return (arm,) if version is None else (arm, f'model_version="{version}"')

    def error_rate(self, version: str | None = None) -> str:
        calls = CATALOG["kingmaker_router_upstream_requests"].exposed_name
        failed = _selector(self.selector, *self._terms(version), 'outcome=~"timeout|connect_error|http_error|bad_response"')
        made = _selector(self.selector, *self._terms(version), 'outcome!~"shadow_skipped|circuit_open"')
        return f"sum(rate({calls}{failed}[{self.window}])) / sum(rate({calls}{made}[{self.window}]))"

    def p99_latency(self, version: str | None = None) -> str:
        hist = CATALOG["kingmaker_router_upstream_duration_seconds"].name
        sel = _selector(self.selector, *self._terms(version))
        return f"histogram_quantile(0.99, sum by (le) (rate({hist}_bucket{sel}[{self.window}])))"


class PrometheusGuardrails:
    """`GuardrailSource` over a `Querier`: a reading that fails is None (logged), never an exception."""

    def __init__(self, querier: Querier, queries: GuardrailQueries | None = None):
        self.querier = querier
        self.queries = queries or GuardrailQueries()

    def _read(self, name: str, promql: str) -> float | None:
        try:
            return self.querier.query(promql)
        except KingmakerError as exc:
            log.warning("guardrail %s unavailable: %s", name, exc)
            return None

    def readings(self, pair: Pair) -> GuardrailReadings:
        version = pair.challenger
        return GuardrailReadings(error_rate=self._read("error rate", self.queries.error_rate(version)),
                                 p99_latency_seconds=self._read("p99 latency", self.queries.p99_latency(version)))


class NoGuardrails:
    """No Prometheus configured: every reading is missing, so `decide` never promotes blind."""

    def readings(self, pair: Pair) -> GuardrailReadings:
        return GuardrailReadings()


# --- drift ------------------------------------------------------------------------------------

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
            computed_at = self.querier.query(f"max({done_name}{_selector(self.selector)})")
            psi = self.querier.query(f"max({psi_name}" + _selector(
                self.selector, f'champion_version="{pair.champion}"', f'challenger_version="{pair.challenger}"') + ")")
            drifted = self.querier.series(f"max by (feature) ({sev_name}{_selector(self.selector)}) >= 1")
        except KingmakerError as exc:
            log.warning("drift result unavailable: %s", exc)
            return None
        features = tuple(sorted(labels.get("feature", "") for labels, _ in drifted if labels.get("feature")))
        fresh = _fresh(computed_at, now, self.max_age_seconds)
        return DriftSummary(score_psi=psi if fresh else None, drifted_features=features, computed_at=computed_at)


class NoDrift:
    def latest(self, pair: Pair, now: float) -> DriftSummary | None:
        return None


def describe(readings: GuardrailReadings, drift: DriftSummary | None) -> Sequence[str]:
    """Short human lines for logs and ``--dry-run``."""
    def fmt(value: float | None, spec: str) -> str:
        return "unavailable" if value is None else format(value, spec)

    return (f"error rate {fmt(readings.error_rate, '.2%')}",
            f"p99 latency {fmt(readings.p99_latency_seconds, '.3g')}s",
            f"score PSI {fmt(None if drift is None else drift.score_psi, '.3g')}")
