"""The Router: the one endpoint clients call. It picks an arm, calls that arm's Scorer, logs every
scored row and takes label feedback.

Configured by environment (`kingmaker.settings.ServingSettings`: arm URLs, limits, tokens) and by the
hot-reloaded traffic file (`kingmaker.router_config`: mode, weights, salt, routing field, timeouts)::

    KINGMAKER_CHAMPION_URL=http://127.0.0.1:3001 KINGMAKER_CHALLENGER_URL=http://127.0.0.1:3002 \\
    KINGMAKER_ROUTER_CONFIG=router.yaml bentoml serve bentos.router:Router --port 3000

Endpoints: ``POST /predict`` (one transaction), ``POST /predict_batch``, ``POST /feedback`` (bearer
token), ``POST /routing`` (current configuration and arms), ``GET /livez``, ``/readyz``, ``/metrics``.

Faults: in split mode a challenger error, timeout or open circuit gives the client the champion's
answer (counted as a fallback); in shadow mode the challenger is called after the answer is sent and
its failures never touch the response; when the champion cannot answer the client gets a 503 with
``Retry-After``. Requests are validated against the champion's signature before any arm is called.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import anyio.to_thread
import bentoml
from starlette.responses import JSONResponse

from bentos import auth
from bentos.config import ConfigWatcher
from bentos.feedback import FeedbackStore
from bentos.lifecycle import Drain, fix_bentoml_request_timers, settle_heap
from bentos.messages import (
    HEADER_ARM,
    HEADER_FALLBACK,
    HEADER_MODE,
    HEADER_MODEL_NAME,
    HEADER_MODEL_VERSION,
    HEADER_REQUEST_ID,
    Empty,
    FeedbackRequest,
    FeedbackResult,
    ModelInfo,
    PredictBatchRequest,
    Prediction,
    PredictionBatch,
    PredictRequest,
)
from bentos.metrics import ROUTER_SPECS, Metrics
from bentos.predlog import BufferedLog, prediction_writer
from bentos.routing import CircuitBreaker, choose_arm, routing_key
from bentos.validation import FeatureSchema, InvalidRequest, Problem, check_batch_size, row_problems
from kingmaker import logs
from kingmaker.roles import Arm, Mode
from kingmaker.router_config import RouterConfig
from kingmaker.settings import LogSettings, ServingSettings

log = logging.getLogger(__name__)
fix_bentoml_request_timers()  # see its docstring: without it p99 latency has 300-500 ms GC spikes

RETRY_AFTER_S = "1"
MAX_UNKNOWN_LISTED = 100


class ArmFailure(Exception):
    """The arm did not give a usable answer (``reason``: timeout, connect_error, http_error, ...)."""

    def __init__(self, arm: Arm, reason: str, detail: str):
        self.arm = arm
        self.reason = reason
        super().__init__(f"{arm} arm: {reason}: {detail}")


class ArmRejected(Exception):
    """The arm answered 4xx: it considers the input invalid."""

    def __init__(self, arm: Arm, status: int, body: Any):
        self.arm = arm
        self.status = status
        self.body = body
        super().__init__(f"{arm} arm rejected the request with {status}")


UPSTREAM_OUTCOMES = ("ok", "timeout", "connect_error", "http_error", "bad_response", "circuit_open", "rejected",
                     "shadow_skipped")


class ArmClient:
    """Pooled keep-alive connections to one arm's Scorer, per-call timeouts and a circuit breaker.

    aiohttp rather than httpx: profiling the Router under load showed ~40% of its CPU inside httpx's
    request path (pure-Python HTTP/1.1 plus anyio plumbing) against ~10% with aiohttp (C parser), which
    BentoML itself uses for its service-to-service clients.
    """

    def __init__(self, arm: Arm, url: str, metrics: Metrics, *,
                 connector: Callable[[], aiohttp.BaseConnector] | None = None, max_connections: int = 64):
        self.arm = arm
        self.url = url.rstrip("/")
        self._connector = connector or (lambda: aiohttp.TCPConnector(
            limit=max_connections, keepalive_timeout=2.0))  # below uvicorn's 5 s, so we close idle ones first
        self._session: aiohttp.ClientSession | None = None
        self.breaker = CircuitBreaker(failure_threshold=5, reset_after_s=2.0)
        self.info: ModelInfo | None = None
        self._upstream = metrics.counter("kingmaker_router_upstream_requests")
        self._upstream_duration = metrics.histogram("kingmaker_router_upstream_duration_seconds")
        self._labelled: tuple[str, dict[str, Any], Any] | None = None  # (version, outcome children, duration)
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:  # created lazily, inside the server's event loop
            self._session = aiohttp.ClientSession(connector=self._connector(), json_serialize=json.dumps)
        return self._session

    def _children(self) -> tuple[dict[str, Any], Any]:
        """Metric children labelled with the version this arm serves now ("unknown" before discovery), so
        the controller's guardrails read the challenger version under test, not its predecessor."""
        version = self.info.model_version if self.info is not None else "unknown"
        if self._labelled is None or self._labelled[0] != version:
            labels = {"arm": self.arm.value, "model_version": version}
            outcomes = {o: self._upstream.labels(**labels, outcome=o) for o in UPSTREAM_OUTCOMES}
            self._labelled = (version, outcomes, self._upstream_duration.labels(**labels))
        return self._labelled[1], self._labelled[2]

    def count(self, outcome: str) -> None:
        self._children()[0][outcome].inc()

    def _timeout(self, ms: float) -> aiohttp.ClientTimeout:
        t = self._timeouts.get(ms)
        if t is None:
            t = self._timeouts[ms] = aiohttp.ClientTimeout(total=ms / 1000.0)
        return t

    async def call(self, path: str, payload: Mapping[str, Any], timeout_ms: float, *,
                   guarded: bool = True) -> dict[str, Any]:
        """POST ``payload`` to the arm; the parsed JSON answer, or `ArmFailure` / `ArmRejected`.

        ``guarded`` calls (traffic) go through the circuit breaker and are counted; discovery calls are not.
        """
        now = time.monotonic()
        if guarded and not self.breaker.allow(now):
            self.count("circuit_open")
            raise ArmFailure(self.arm, "circuit_open", "too many recent failures; skipping it for a while")
        deadline = now + timeout_ms / 1000.0
        started = time.perf_counter()
        data = json.dumps(payload).encode()
        url = self.url + path
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self.session.post(url, data=data, headers=_JSON_HEADERS,
                                             timeout=self._timeout(timeout_ms)) as resp:
                    status = resp.status
                    raw = await resp.read()
                break
            except TimeoutError:
                raise self._failure(guarded, "timeout", f"no answer within {timeout_ms:.0f} ms") from None
            except aiohttp.ClientError as exc:
                # A pooled connection closed under us, or the arm is down. Scoring is pure, so one
                # retry is safe; a dead arm fails fast again (connection refused).
                if attempt == 1 and time.monotonic() < deadline:
                    continue
                raise self._failure(guarded, "connect_error", f"{type(exc).__name__}: {exc}") from None
        if guarded:
            self._children()[1].observe(time.perf_counter() - started)
        if status >= 500 or status in (404, 405):
            raise self._failure(guarded, "http_error", f"HTTP {status}: {raw[:200]!r}")
        try:
            body = json.loads(raw)
        except ValueError:
            raise self._failure(guarded, "bad_response", f"HTTP {status} with a non-JSON body") from None
        if status >= 400:
            if guarded:
                self.breaker.record_success()  # the arm is healthy; it just refused this input
                self.count("rejected")
            raise ArmRejected(self.arm, status, body)
        if not isinstance(body, dict):
            raise self._failure(guarded, "bad_response", "JSON answer is not an object")
        if guarded:
            self.breaker.record_success()
            self.count("ok")
        return body

    def _failure(self, guarded: bool, reason: str, detail: str) -> ArmFailure:
        if guarded:
            self.breaker.record_failure(time.monotonic())
            self.count(reason)
        return ArmFailure(self.arm, reason, detail)

    async def fetch_info(self, timeout_ms: float = 2000.0) -> ModelInfo:
        body = await self.call("/info", {}, timeout_ms, guarded=False)
        self.info = ModelInfo.model_validate(body)
        return self.info

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


_JSON_HEADERS = {"Content-Type": "application/json"}


def make_connector(url: str) -> Callable[[], aiohttp.BaseConnector] | None:
    """How to reach an arm URL: None = real TCP. Tests replace this to call in-process apps."""
    return None


def _error(ctx: bentoml.Context, status: int, body: dict[str, Any], headers: Mapping[str, str]) -> JSONResponse:
    ctx.response.status_code = status  # BentoML copies status and headers from the context
    for k, v in headers.items():
        ctx.response.headers[k] = v
    return JSONResponse(body, status_code=status, headers=dict(headers))


_guard = auth.GuardSlot()


@bentoml.service(
    name="kingmaker-router",
    workers=1,
    traffic={"timeout": 60},
    logging={"access": {"enabled": False}},  # per-request log lines cost throughput; metrics count requests
)
class Router:
    """Routes between the champion and challenger Scorers (see the module docstring)."""

    def __init__(self) -> None:
        settings = ServingSettings.from_env()
        log_settings = LogSettings.from_env()
        self.settings = settings
        self.metrics = Metrics(ROUTER_SPECS)
        m = self.metrics
        self.arms: dict[Arm, ArmClient] = {}
        self._started = False  # discovery and deferred closes need the server's event loop
        self._retired: set[ArmClient] = set()  # replaced clients, closed once their requests are done
        self._background: set[asyncio.Task[None]] = set()
        self.config = ConfigWatcher(Path(settings.router_config) if settings.router_config else None,
                                    on_reload=self._on_reload)
        self._on_reload("ok", self.config.current())
        rows = m.counter("kingmaker_prediction_log_rows")
        flush = m.histogram("kingmaker_prediction_log_flush_duration_seconds")
        written, failed, dropped = (rows.labels(outcome=o) for o in ("written", "failed", "dropped"))

        def on_written(n: int, seconds: float) -> None:
            written.inc(n)
            flush.observe(seconds)

        self.log = BufferedLog(prediction_writer(log_settings.predictions_url), max_rows=settings.log_flush_rows,
                               max_delay_s=settings.log_flush_seconds, max_buffer_rows=settings.log_max_buffer_rows,
                               on_written=on_written, on_failed=failed.inc, on_dropped=dropped.inc)
        self.feedback_store = FeedbackStore(log_settings.predictions_url, log_settings.labels_url,
                                            settings.feedback_lookup_days)
        self._feedback_lock = asyncio.Lock()
        self.schema: FeatureSchema | None = None
        self._feat_cols: dict[str, str] = {}
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        self._refreshing: set[Arm] = set()
        self.drain = Drain(settings.drain_seconds)
        auth_failures = m.counter("kingmaker_auth_failures")
        feedback_tokens = auth.TokenStore(settings.feedback_tokens, Path(settings.feedback_token_file)
                                          if settings.feedback_token_file else None)
        protected: dict[str, auth.TokenStore] = {"/feedback": feedback_tokens}
        if settings.scoring_tokens or settings.scoring_token_file:
            scoring = auth.TokenStore(settings.scoring_tokens, Path(settings.scoring_token_file)
                                      if settings.scoring_token_file else None)
            protected.update(dict.fromkeys(("/predict", "/predict_batch", "/routing"), scoring))
        _guard.guard = auth.Guard(protected=protected, max_body_bytes=settings.max_body_bytes,
                                  on_denied=lambda path, r: auth_failures.labels(path=path, reason=r.value).inc())
        self._requests = m.counter("kingmaker_router_requests")
        self._latency = m.histogram("kingmaker_router_request_duration_seconds")
        self._routed = m.counter("kingmaker_router_routed")
        self._fallbacks = m.counter("kingmaker_router_fallbacks")
        self._unavailable = m.counter("kingmaker_router_unavailable")
        if not feedback_tokens.configured:
            log.warning("no /feedback tokens configured (KINGMAKER_FEEDBACK_TOKEN or _FILE): /feedback answers 503")

    def _on_reload(self, outcome: str, cfg: RouterConfig) -> None:
        self.metrics.counter("kingmaker_router_config_reloads").labels(outcome=outcome).inc()
        self.metrics.gauge("kingmaker_router_challenger_weight").set(cfg.challenger_weight)
        if outcome == "ok":
            self._apply_arm_urls(cfg)

    def _arm_urls(self, cfg: RouterConfig) -> dict[Arm, str]:
        """Where each arm is: the config file's URL when it names one, else the environment's."""
        urls = {Arm.CHAMPION: cfg.champion_url or self.settings.champion_url,
                Arm.CHALLENGER: self.settings.challenger_url if cfg.challenger_url is None else cfg.challenger_url}
        return {arm: url.rstrip("/") for arm, url in urls.items() if url}

    def _apply_arm_urls(self, cfg: RouterConfig) -> None:
        """Point each arm's client at its URL. A replaced client keeps serving the requests it has in
        flight and is closed once they are done (after the longest timeout)."""
        wanted = self._arm_urls(cfg)
        for arm in (Arm.CHAMPION, Arm.CHALLENGER):
            current = self.arms.get(arm)
            url = wanted.get(arm)
            if (current.url if current is not None else None) == url:
                continue
            if url is None:
                log.info("%s arm removed (was %s)", arm, current.url if current else None)
                del self.arms[arm]
            else:
                self.arms[arm] = ArmClient(arm, url, self.metrics, connector=make_connector(url))
                if current is not None:
                    log.info("%s arm moves from %s to %s", arm, current.url, url)
                if self._started:
                    self._spawn(self._discover(arm))
            if current is not None:
                self._retired.add(current)
                if self._started:
                    self._spawn(self._close_later(current, cfg))

    async def _close_later(self, client: ArmClient, cfg: RouterConfig) -> None:
        await asyncio.sleep(max(cfg.champion_timeout_ms, cfg.challenger_timeout_ms, cfg.shadow_timeout_ms) / 1000 + 1)
        self._retired.discard(client)
        await client.aclose()

    # --- lifecycle ------------------------------------------------------------------------------
    @bentoml.on_startup
    async def _start(self) -> None:
        if self.drain.install():  # under a real server (not in-process tests)
            settle_heap()
        self._started = True
        for arm in list(self.arms):
            self._spawn(self._discover(arm))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _discover(self, arm: Arm) -> None:
        """Fetch an arm's /info until it answers (arms may start after the router)."""
        delay = 0.2
        client = self.arms.get(arm)
        while client is not None and self.arms.get(arm) is client:
            try:
                info = await client.fetch_info()
            except (ArmFailure, ArmRejected, ValueError) as exc:
                log.debug("waiting for the %s arm at %s: %s", arm, client.url, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if self.arms.get(arm) is client:
                self._adopt(arm, info)
            return

    def _adopt(self, arm: Arm, info: ModelInfo) -> None:
        log.info("%s arm at %s: %s version %s, %d features", arm, self.arms[arm].url, info.model_name,
                 info.model_version, len(info.features))
        if arm is Arm.CHAMPION:
            self.schema = FeatureSchema(tuple(info.features), tuple(info.feature_types))
            self._feat_cols = {f: logs.feature_column(f) for f in info.features}
        champion = self.arms[Arm.CHAMPION].info
        challenger = self.arms[Arm.CHALLENGER].info if Arm.CHALLENGER in self.arms else None
        if champion and challenger and set(champion.features) != set(challenger.features):
            log.error("the challenger's signature differs from the champion's (%s vs %s): challenger-routed "
                      "requests will fall back to the champion", challenger.features, champion.features)

    def _check_version(self, arm: Arm, version: str) -> None:
        """An arm answering with a new version was re-pointed: re-read its signature in the background."""
        client = self.arms.get(arm)
        info = client.info if client is not None else None
        if info is not None and info.model_version != version and arm not in self._refreshing:
            self._refreshing.add(arm)

            async def refresh() -> None:
                try:
                    await self._discover(arm)
                finally:
                    self._refreshing.discard(arm)

            self._spawn(refresh())

    def __is_ready__(self) -> bool:
        return self.schema is not None and not self.drain.draining

    def __metrics__(self, content: str) -> str:
        self.metrics.gauge("kingmaker_router_challenger_weight").set(self.config.current().challenger_weight)
        return content + self.metrics.exposition()

    @bentoml.on_shutdown
    async def _stop(self) -> None:
        """After the server has finished in-flight requests: wait for shadow calls, then flush the log."""
        if self._shadow_tasks:
            timeout = self.config.current().shadow_timeout_ms * 2 / 1000.0 + 2.0
            await asyncio.wait(set(self._shadow_tasks), timeout=timeout)
        for task in list(self._background):
            task.cancel()
        for client in [*self.arms.values(), *self._retired]:
            await client.aclose()
        pending = self.log.pending
        await anyio.to_thread.run_sync(self.log.close)
        log.info("router stopped: prediction log flushed (%d rows at shutdown, %d written in total)",
                 pending, self.log.written)

    # --- scoring --------------------------------------------------------------------------------
    def _row(self, request_id: str, ts: Any, key: str, arm: Arm, served: bool, mode: Mode,
             answer: Mapping[str, Any], latency_ms: float, features: Mapping[str, Any]) -> dict[str, Any]:
        row = {"request_id": request_id, "ts": ts, "routing_key": key, "arm": arm.value, "served": served,
               "mode": mode.value, "model_name": answer["model_name"], "model_version": answer["model_version"],
               "score": answer["score"], "decision": answer["decision"], "threshold": answer["threshold"],
               "latency_ms": latency_ms}
        cols = self._feat_cols
        for name, value in features.items():
            row[cols.get(name) or logs.feature_column(name)] = float(value)
        return row

    def _not_ready(self, ctx: bentoml.Context, request_id: str | None) -> JSONResponse:
        self._unavailable.labels(reason="not_ready").inc()
        headers = {"Retry-After": RETRY_AFTER_S, **({HEADER_REQUEST_ID: request_id} if request_id else {})}
        return _error(ctx, 503, {"error": "router is not ready: the champion arm has not answered yet",
                                 "request_id": request_id}, headers)

    def _champion_down(self, ctx: bentoml.Context, exc: ArmFailure, request_id: str | None,
                       mode: Mode) -> JSONResponse:
        self._unavailable.labels(reason=exc.reason).inc()
        self._requests.labels(arm=Arm.CHAMPION.value, model_version="", mode=mode.value, code="503").inc()
        headers = {"Retry-After": RETRY_AFTER_S, **({HEADER_REQUEST_ID: request_id} if request_id else {})}
        return _error(ctx, 503, {"error": f"the champion cannot answer right now ({exc}); retry later",
                                 "request_id": request_id, "retry_after_s": int(RETRY_AFTER_S)}, headers)

    async def _score_one(self, arm: Arm, payload: Mapping[str, Any], cfg: RouterConfig) -> dict[str, Any]:
        timeout = cfg.champion_timeout_ms if arm is Arm.CHAMPION else cfg.challenger_timeout_ms
        client = self.arms.get(arm)
        if client is None:  # the challenger was removed by a configuration change meanwhile
            raise ArmFailure(arm, "connect_error", "arm removed from the configuration")
        answer = await client.call("/score", payload, timeout)
        self._check_version(arm, str(answer.get("model_version")))
        return answer

    @bentoml.api(route="/predict")
    async def predict(self, request: PredictRequest, /, ctx: bentoml.Context) -> Prediction:
        """Route one transaction to an arm and return its score and decision."""
        started = time.perf_counter()
        ts = logs.now()
        cfg = self.config.current()
        request_id = request.request_id or uuid.uuid4().hex
        schema = self.schema
        if schema is None:
            return self._not_ready(ctx, request_id)  # type: ignore[return-value]
        problems = row_problems(request.features, schema)
        if problems:
            exc = InvalidRequest(problems)
            return _error(ctx, exc.status, exc.body(), {HEADER_REQUEST_ID: request_id})  # type: ignore[return-value]
        key = routing_key(request_id, request.ids, cfg.routing_field)
        mode = cfg.mode
        has_challenger = Arm.CHALLENGER in self.arms
        weight = cfg.challenger_weight if (mode is Mode.SPLIT and has_challenger) else 0.0
        chosen = choose_arm(key, weight, cfg.salt)
        self._routed.labels(arm=chosen.value, mode=mode.value).inc()
        payload = {"features": request.features, "request_id": request_id}
        answer: dict[str, Any] | None = None
        served = chosen
        fallback = False
        t_arm = time.perf_counter()
        if chosen is Arm.CHALLENGER:
            try:
                answer = await self._score_one(Arm.CHALLENGER, payload, cfg)
            except (ArmFailure, ArmRejected) as exc:
                reason = exc.reason if isinstance(exc, ArmFailure) else "rejected"
                log.debug("falling back to the champion for %s: %s", request_id, exc)
                self._fallbacks.labels(reason=reason).inc()
                served, fallback = Arm.CHAMPION, True
                t_arm = time.perf_counter()
        if answer is None:
            try:
                answer = await self._score_one(Arm.CHAMPION, payload, cfg)
            except ArmFailure as exc:
                return self._champion_down(ctx, exc, request_id, mode)  # type: ignore[return-value]
            except ArmRejected as exc:
                return _error(ctx, exc.status, exc.body, {HEADER_REQUEST_ID: request_id})  # type: ignore[return-value]
        done = time.perf_counter()
        self.log.add_one(self._row(request_id, ts, key, served, True, mode, answer, (done - t_arm) * 1000.0,
                                   request.features))
        if mode is Mode.SHADOW and has_challenger:
            self._shadow(cfg, [payload], [(request_id, key, request.features)], ts, batch=False)
        version = str(answer["model_version"])
        headers = ctx.response.headers
        headers[HEADER_REQUEST_ID] = request_id
        headers[HEADER_ARM] = served.value
        headers[HEADER_MODEL_NAME] = str(answer["model_name"])
        headers[HEADER_MODEL_VERSION] = version
        headers[HEADER_MODE] = mode.value
        if fallback:
            headers[HEADER_FALLBACK] = "true"
        self._requests.labels(arm=served.value, model_version=version, mode=mode.value, code="200").inc()
        self._latency.labels(arm=served.value, model_version=version, mode=mode.value).observe(done - started)
        return Prediction.model_construct(request_id=request_id, arm=served.value, model_name=answer["model_name"],
                                          model_version=version, score=answer["score"], decision=answer["decision"],
                                          threshold=answer["threshold"], mode=mode.value, fallback=fallback)

    def _shadow(self, cfg: RouterConfig, payloads: Sequence[Mapping[str, Any]],
                rows: Sequence[tuple[str, str, Mapping[str, Any]]], ts: Any, *, batch: bool) -> None:
        """Score the same request(s) on the challenger off the response path; log them as not served."""
        client = self.arms.get(Arm.CHALLENGER)
        if client is None:  # removed by a configuration change meanwhile
            return
        if len(self._shadow_tasks) >= cfg.shadow_max_in_flight:
            client.count("shadow_skipped")
            return

        async def run() -> None:
            started = time.perf_counter()
            try:
                if batch:
                    body = {"rows": [p["features"] for p in payloads], "request_ids": [r[0] for r in rows]}
                    answer = await client.call("/score_batch", body, cfg.shadow_timeout_ms * max(1.0, len(rows) / 100))
                    answers = [{"model_name": answer["model_name"], "model_version": answer["model_version"],
                                "score": s, "decision": d, "threshold": answer["threshold"]}
                               for s, d in zip(answer["scores"], answer["decisions"], strict=True)]
                else:
                    answer = await client.call("/score", payloads[0], cfg.shadow_timeout_ms)
                    self._check_version(Arm.CHALLENGER, str(answer.get("model_version")))
                    answers = [answer]
            except (ArmFailure, ArmRejected) as exc:
                log.debug("shadow call failed: %s", exc)
                return
            latency_ms = (time.perf_counter() - started) * 1000.0
            for (request_id, key, features), ans in zip(rows, answers, strict=True):
                self.log.add_one(self._row(request_id, ts, key, Arm.CHALLENGER, False, Mode.SHADOW, ans,
                                           latency_ms, features))

        task = asyncio.create_task(run())
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    @bentoml.api(route="/predict_batch")
    async def predict_batch(self, request: PredictBatchRequest, /, ctx: bentoml.Context) -> PredictionBatch:
        """Route each row (sticky per routing key) and score each arm's share in one call."""
        started = time.perf_counter()
        ts = logs.now()
        cfg = self.config.current()
        schema = self.schema
        if schema is None:
            return self._not_ready(ctx, None)  # type: ignore[return-value]
        rows = request.rows
        try:
            check_batch_size(len(rows), self.settings.max_batch_rows)
            problems: list[Problem] = []
            for i, r in enumerate(rows):
                row_problems(r.features, schema, ("rows", i, "features"), problems)
            seen: set[str] = set()
            for i, r in enumerate(rows):
                if r.request_id is not None:
                    if r.request_id in seen:
                        problems.append(Problem(("rows", i, "request_id"), "duplicate request id in the batch",
                                                "duplicate_id"))
                    seen.add(r.request_id)
            if problems:
                raise InvalidRequest(problems)
        except InvalidRequest as exc:
            return _error(ctx, exc.status, exc.body(), {})  # type: ignore[return-value]
        mode = cfg.mode
        has_challenger = Arm.CHALLENGER in self.arms
        weight = cfg.challenger_weight if (mode is Mode.SPLIT and has_challenger) else 0.0
        ids = [r.request_id or uuid.uuid4().hex for r in rows]
        keys = [routing_key(rid, r.ids, cfg.routing_field) for rid, r in zip(ids, rows, strict=True)]
        chosen = [choose_arm(k, weight, cfg.salt) for k in keys]
        groups: dict[Arm, list[int]] = {Arm.CHAMPION: [], Arm.CHALLENGER: []}
        for i, arm in enumerate(chosen):
            groups[arm].append(i)
        for arm, idx in groups.items():
            if idx:
                self._routed.labels(arm=arm.value, mode=mode.value).inc(len(idx))

        async def call(arm: Arm, idx: list[int]) -> dict[str, Any]:
            body = {"rows": [rows[i].features for i in idx], "request_ids": [ids[i] for i in idx]}
            timeout = cfg.champion_timeout_ms if arm is Arm.CHAMPION else cfg.challenger_timeout_ms
            client = self.arms.get(arm)
            if client is None:
                raise ArmFailure(arm, "connect_error", "arm removed from the configuration")
            return await client.call("/score_batch", body, timeout * max(1.0, len(idx) / 100.0))

        results: dict[int, tuple[Arm, dict[str, Any], int, bool]] = {}  # row -> (arm, answer, position, fallback)
        champion_idx = list(groups[Arm.CHAMPION])
        fallback_rows: set[int] = set()
        tasks = {arm: asyncio.create_task(call(arm, idx)) for arm, idx in groups.items() if idx}
        t_arm = time.perf_counter()
        if Arm.CHALLENGER in tasks:
            try:
                answer = await tasks[Arm.CHALLENGER]
                for pos, i in enumerate(groups[Arm.CHALLENGER]):
                    results[i] = (Arm.CHALLENGER, answer, pos, False)
            except (ArmFailure, ArmRejected) as exc:
                reason = exc.reason if isinstance(exc, ArmFailure) else "rejected"
                self._fallbacks.labels(reason=reason).inc(len(groups[Arm.CHALLENGER]))
                fallback_rows = set(groups[Arm.CHALLENGER])
        try:
            champion_answers: list[tuple[list[int], dict[str, Any]]] = []
            if Arm.CHAMPION in tasks:
                champion_answers.append((champion_idx, await tasks[Arm.CHAMPION]))
            if fallback_rows:
                idx = sorted(fallback_rows)
                champion_answers.append((idx, await call(Arm.CHAMPION, idx)))
        except ArmFailure as exc:
            return self._champion_down(ctx, exc, None, mode)  # type: ignore[return-value]
        except ArmRejected as exc:
            return _error(ctx, exc.status, exc.body, {})  # type: ignore[return-value]
        for idx, answer in champion_answers:
            for pos, i in enumerate(idx):
                results[i] = (Arm.CHAMPION, answer, pos, i in fallback_rows)
        latency_ms = (time.perf_counter() - t_arm) * 1000.0
        out: list[Prediction] = []
        for i, r in enumerate(rows):
            arm, answer, pos, fb = results[i]
            one = {"model_name": answer["model_name"], "model_version": str(answer["model_version"]),
                   "score": answer["scores"][pos], "decision": answer["decisions"][pos],
                   "threshold": answer["threshold"]}
            self.log.add_one(self._row(ids[i], ts, keys[i], arm, True, mode, one, latency_ms, r.features))
            out.append(Prediction.model_construct(request_id=ids[i], arm=arm.value, mode=mode.value, fallback=fb,
                                                  **one))
            self._requests.labels(arm=arm.value, model_version=one["model_version"], mode=mode.value,
                                  code="200").inc()
        if mode is Mode.SHADOW and has_challenger:
            self._shadow(cfg, [{"features": r.features} for r in rows],
                         [(ids[i], keys[i], r.features) for i, r in enumerate(rows)], ts, batch=True)
        ctx.response.headers[HEADER_MODE] = mode.value
        log.debug("batch of %d rows routed in %.1f ms", len(rows), (time.perf_counter() - started) * 1000)
        return PredictionBatch.model_construct(predictions=out)

    # --- feedback and introspection ----------------------------------------------------------------
    @bentoml.api(route="/feedback")
    async def feedback(self, request: FeedbackRequest, /, ctx: bentoml.Context) -> FeedbackResult:
        """Record labels for request ids (bearer token required). Idempotent: a label identical to the
        recorded one is not written again; unknown ids are recorded and reported."""
        items = request.items()
        try:
            check_batch_size(len(items), self.settings.max_batch_rows, ("labels",))
        except InvalidRequest as exc:
            return _error(ctx, exc.status, exc.body(), {})  # type: ignore[return-value]
        latest: dict[str, int] = {}
        for item in items:  # within one request the last label for an id wins
            latest[item.request_id] = item.label
        ids = list(latest)
        async with self._feedback_lock:  # one writer per process: no duplicate rows from concurrent retries
            pending = self.log.pending_values("request_id")
            unknown_candidates = [i for i in ids if i not in pending]
            known = await anyio.to_thread.run_sync(self.feedback_store.known_ids, unknown_candidates)
            existing = await anyio.to_thread.run_sync(self.feedback_store.latest_labels, ids)
            to_write = [(rid, lab) for rid, lab in latest.items() if existing.get(rid) != lab]
            updated = sum(1 for rid, _ in to_write if rid in existing)
            written = await anyio.to_thread.run_sync(self.feedback_store.append, to_write)
        unknown = [i for i in unknown_candidates if i not in known]
        labels = self.metrics.counter("kingmaker_feedback_labels")
        if written - updated:
            labels.labels(outcome="written").inc(written - updated)
        if updated:
            labels.labels(outcome="updated").inc(updated)
        duplicates = len(items) - written
        if duplicates:
            labels.labels(outcome="duplicate").inc(duplicates)
        if unknown:
            self.metrics.counter("kingmaker_feedback_unknown_ids").inc(len(unknown))
        return FeedbackResult(received=len(items), written=written, duplicates=duplicates, updated=updated,
                              unknown=len(unknown), unknown_ids=unknown[:MAX_UNKNOWN_LISTED])

    @bentoml.api(route="/routing")
    async def routing(self, _: Empty, /) -> dict[str, Any]:
        """The traffic configuration in force and what each arm serves."""
        cfg = self.config.current()
        return {
            "config": cfg.as_dict(),
            "config_file": self.settings.router_config or None,
            "config_error": self.config.last_error,
            "arms": {arm.value: {"url": c.url, "circuit_open": c.breaker.is_open,
                                 "model": c.info.model_dump() if c.info else None}
                     for arm, c in self.arms.items()},
        }


Router.add_asgi_middleware(auth.GuardMiddleware, slot=_guard)  # type: ignore[attr-defined]  # a bentoml Service
