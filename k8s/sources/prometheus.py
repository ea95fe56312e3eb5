"""The challenger's serving health from Prometheus: the `k8s.observe.GuardrailSource` source.

`PrometheusAPI` is the instant-query endpoint of the Prometheus HTTP API (a `Querier`); `GuardrailQueries`
holds the PromQL of each guardrail over the Router's metrics (`kingmaker.catalog`); `PrometheusGuardrails`
reads them. An unreachable Prometheus gives readings of None, never an exception: `decide` then holds
instead of promoting.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from k8s.decide import GuardrailReadings
from k8s.state import Pair
from kingmaker.catalog import CATALOG
from kingmaker.errors import KingmakerError, PermanentError, TemporaryError
from kingmaker.roles import Arm

log = logging.getLogger(__name__)


class Querier(Protocol):
    """A PromQL endpoint: one number, or every series of an instant vector."""

    def query(self, promql: str) -> float | None: ...

    def series(self, promql: str) -> list[tuple[dict[str, str], float]]: ...


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


def selector(extra: str, *terms: str) -> str:
    """``{a,b,extra}``: label matchers, with ``extra`` (e.g. ``namespace="fraud"``) added when given."""
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
        failed = selector(self.selector, *self._terms(version), 'outcome=~"timeout|connect_error|http_error|bad_response"')
        made = selector(self.selector, *self._terms(version), 'outcome!~"shadow_skipped|circuit_open"')
        return f"sum(rate({calls}{failed}[{self.window}])) / sum(rate({calls}{made}[{self.window}]))"

    def p99_latency(self, version: str | None = None) -> str:
        hist = CATALOG["kingmaker_router_upstream_duration_seconds"].name
        sel = selector(self.selector, *self._terms(version))
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
