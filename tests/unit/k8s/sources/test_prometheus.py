"""Guardrails and drift through the Prometheus HTTP API: httpx.MockTransport for the protocol, a tiny real
HTTP server on 127.0.0.1 for timeouts and a dead port for "unreachable"."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from k8s.decide import GuardrailReadings
from k8s.sources.drift import PrometheusDrift
from k8s.sources.prometheus import GuardrailQueries, PrometheusAPI, PrometheusGuardrails
from k8s.state import Pair
from kingmaker.errors import PermanentError, TemporaryError

from ..conftest import query_api

PAIR = Pair("1", "2")


def vector(*samples: tuple[dict[str, str], str]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector",
                                          "result": [{"metric": m, "value": [1700000000.0, v]} for m, v in samples]}}


def api(answer: Any, seen: list[str] | None = None) -> PrometheusAPI:
    """A PrometheusAPI whose server answers ``answer(query)`` -> (status, json)."""
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/query"
        query = request.url.params["query"]
        if seen is not None:
            seen.append(query)
        status, body = answer(query)
        return httpx.Response(status, json=body)

    return PrometheusAPI("http://prometheus.test", transport=httpx.MockTransport(handler))


def test_guardrails_read_error_rate_and_p99() -> None:
    seen: list[str] = []

    def answer(q: str) -> tuple[int, Any]:
        return 200, vector(({}, "0.004" if q.startswith("sum(rate") else "0.12"))

    readings = PrometheusGuardrails(api(answer, seen)).readings(PAIR)
    assert readings == GuardrailReadings(error_rate=0.004, p99_latency_seconds=0.12)
    errors, p99 = seen
    assert "kingmaker_router_upstream_requests_total" in errors and 'arm="challenger"' in errors
    assert 'outcome=~"timeout|connect_error|http_error|bad_response"' in errors
    assert p99.startswith("histogram_quantile(0.99,") and "kingmaker_router_upstream_duration_seconds_bucket" in p99
    # scoped to the challenger version under test: a predecessor's calls in the window do not count
    assert errors.count(f'model_version="{PAIR.challenger}"') == 2 and f'model_version="{PAIR.challenger}"' in p99


def test_queries_take_the_window_and_an_extra_selector() -> None:
    q = GuardrailQueries(window="5m", selector='namespace="fraud"')
    assert '[5m]' in q.error_rate() and '{arm="challenger",namespace="fraud"}' in q.p99_latency()
    assert q.error_rate().count('namespace="fraud"') == 2
    assert '{arm="challenger",model_version="7",namespace="fraud"}' in q.p99_latency("7")


@pytest.mark.parametrize(("status", "body"), [
    (200, vector()),  # no series: no traffic in the window
    (200, vector(({}, "NaN"))),  # 0/0
    (503, {"status": "error", "errorType": "unavailable", "error": "overloaded"}),
    (400, {"status": "error", "errorType": "bad_data", "error": "parse error"}),
    (200, vector(({"arm": "a"}, "0.1"), ({"arm": "b"}, "0.2"))),  # ambiguous
    (200, {"status": "success", "data": {"resultType": "matrix", "result": []}}),
])
def test_a_reading_that_cannot_be_had_is_none_never_an_exception(status: int, body: Any) -> None:
    readings = PrometheusGuardrails(api(lambda q: (status, body))).readings(PAIR)
    assert readings == GuardrailReadings(error_rate=None, p99_latency_seconds=None)


def test_api_error_kinds() -> None:
    with pytest.raises(TemporaryError):
        api(lambda q: (503, {"status": "error"})).query("up")
    with pytest.raises(PermanentError, match="bad_data"):
        api(lambda q: (400, {"status": "error", "errorType": "bad_data", "error": "x"})).query("up")
    assert api(lambda q: (200, {"status": "success", "data": {"resultType": "scalar",
                                                               "result": [1.0, "3"]}})).query("3") == 3.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_prometheus_gives_none() -> None:
    prom = PrometheusAPI(f"http://127.0.0.1:{_free_port()}", timeout=1.0)
    with pytest.raises(TemporaryError, match="unreachable"):
        prom.query("up")
    assert PrometheusGuardrails(prom).readings(PAIR) == GuardrailReadings()


@pytest.fixture
def slow_server() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 that answers after 2 s."""
    class Slow(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(2.0)
            body = json.dumps(vector(({}, "1"))).encode()
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the client gave up

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_slow_prometheus_times_out(slow_server: str) -> None:
    started = time.monotonic()
    readings = PrometheusGuardrails(PrometheusAPI(slow_server, timeout=0.3)).readings(PAIR)
    assert readings == GuardrailReadings()
    assert time.monotonic() - started < 1.9  # both queries gave up long before the 2 s answer


@pytest.fixture
def prometheus_like() -> Iterator[tuple[str, list[str]]]:
    """A real local HTTP server speaking the /api/v1/query protocol from a table of answers."""
    seen: list[str] = []

    def answer(path: str, query: str) -> tuple[int, Any]:
        seen.append(query)
        if "drift_last_success" in query:
            doc = vector(({}, "1700000000"))
        elif "drift_arms_score_psi" in query:
            doc = vector(({}, "0.31")) if 'challenger_version="2"' in query else vector()
        elif "drift_feature_severity" in query:
            doc = vector(({"feature": "amount"}, "2"), ({"feature": "v14"}, "1"))
        else:
            doc = vector()
        return (200 if path == "/api/v1/query" else 404), doc

    with query_api(answer) as url:
        yield url, seen


def test_drift_from_pushed_gauges(prometheus_like: tuple[str, list[str]]) -> None:
    url, seen = prometheus_like
    drift = PrometheusDrift(PrometheusAPI(url, timeout=2.0), max_age_seconds=3600)
    fresh = drift.latest(PAIR, now=1700000000 + 60)
    assert fresh is not None
    assert fresh.score_psi == pytest.approx(0.31) and fresh.computed_at == 1700000000
    assert fresh.drifted_features == ("amount", "v14")
    assert any('champion_version="1",challenger_version="2"' in q for q in seen)
    stale = drift.latest(PAIR, now=1700000000 + 7200)
    assert stale is not None and stale.score_psi is None
    other = drift.latest(Pair("1", "3"), now=1700000000 + 60)
    assert other is not None and other.score_psi is None


def test_drift_with_prometheus_down_is_none() -> None:
    assert PrometheusDrift(PrometheusAPI(f"http://127.0.0.1:{_free_port()}", timeout=0.5)).latest(PAIR, 0.0) is None
