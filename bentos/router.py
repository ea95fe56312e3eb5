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
its failures never touch the response (nor, in split mode, do those of pairing calls, which also never open an
arm's circuit); when the champion cannot answer the client gets a 503 with
``Retry-After`` — or, in split mode with ``champion_fallback: challenger``, the challenger's answer
(counted). Every answered row is in the prediction log's local segment before the answer is sent; if it
cannot be written the client gets a 503 instead. Requests are validated against the champion's
signature before any arm is called.

The parts: `RoutingEngine` (below) routes, falls back, scores off the response path and logs, for one
request and for a batch alike, with no HTTP; `bentos.arms` holds the arm clients and their lifecycle,
`bentos.predlog` the prediction log, `bentos.feedback` the labels, `bentos.answers` the mapping of refusals
to HTTP answers, `bentos.edge` what BentoML answers itself; the `Router` service only wires them.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio.to_thread
import bentoml

from bentos import auth, edge
from bentos.answers import RateLimitedLog, Unavailable, answers_refusals
from bentos.arms import UPSTREAM_OUTCOMES, ArmAnswer, ArmFailure, ArmPool, ArmRejected
from bentos.config import ConfigWatcher
from bentos.feedback import Feedback, FeedbackStore
from bentos.lifecycle import Drain, fix_bentoml_request_timers, settle_heap, show_info_logs
from bentos.messages import (
    HEADER_ARM,
    HEADER_FALLBACK,
    HEADER_MODE,
    HEADER_MODEL_NAME,
    HEADER_MODEL_VERSION,
    HEADER_REQUEST_ID,
    Empty,
    ErrorCode,
    FeedbackRequest,
    FeedbackResult,
    PredictBatchRequest,
    Prediction,
    PredictionBatch,
    PredictRequest,
)
from bentos.metrics import ROUTER_SPECS, Metrics
from bentos.predlog import LogUnavailable, SegmentLog, router_log
from bentos.routing import choose_arm, pair_sampled, routing_key
from bentos.validation import FeatureSchema, InvalidRequest, Problem, check_batch_size, row_problems
from kingmaker import logs
from kingmaker.roles import Arm, Mode
from kingmaker.router_config import ChampionFallback, RouterConfig
from kingmaker.settings import LogSettings, ServingSettings, default_home

log = logging.getLogger(__name__)
rate_limited = RateLimitedLog(log)
fix_bentoml_request_timers()  # see its docstring: without it p99 latency has 300-500 ms GC spikes
edge.install()  # bounded path labels, error answers of our shape, client errors logged in one line

Features = Mapping[str, Any]
PAIR_OUTCOMES = ("paired", "failed", "skipped", "circuit_open", "log_failed", "fallback")
Served = tuple[Arm, ArmAnswer, float, bool]  # per row: the arm that answered, its answer, call ms, fell back


def new_id() -> str:
    return uuid.uuid4().hex


class RoutingEngine:
    """Routes requests to the arms and logs every scored row; no HTTP here.

    One core (`_route`) serves a single request and a batch: rows are grouped by the arm `choose_arm`
    gives their routing key, each group is scored in one call (both arms at once), the challenger's rows
    go to the champion if it fails (and, with ``champion_fallback: challenger``, the champion's rows to the
    challenger if the champion fails), every answered row is in the prediction log's segment before the
    answer is returned, and in shadow mode the challenger scores the same rows off the response path
    (`score_off_path`); in split mode with ``pairing`` the arm that did not answer a row does (`_pair`). Refusals are raised: `InvalidRequest`, `ArmRejected` (the champion refused the
    input), `Unavailable` (not ready, the champion cannot answer, the answer could not be logged).
    """

    def __init__(self, pool: ArmPool, config: ConfigWatcher, predictions: SegmentLog, metrics: Metrics,
                 max_batch_rows: int):
        self.pool = pool
        self.config = config
        self.predictions = predictions
        self.max_batch_rows = max_batch_rows
        self._requests = metrics.counter("kingmaker_router_requests")
        self._latency = metrics.histogram("kingmaker_router_request_duration_seconds")
        self._routed = metrics.counter("kingmaker_router_routed")
        self._fallbacks = metrics.counter("kingmaker_router_fallbacks")
        self._champion_fallbacks = metrics.counter("kingmaker_router_champion_fallbacks")
        self._unavailable = metrics.counter("kingmaker_router_unavailable")
        # every reason of these closed sets starts at 0: dashboards show 0 rather than no data, and the first
        # fallback or 503 counts as an increase
        failures = [o for o in UPSTREAM_OUTCOMES if o not in ("ok", "shadow_skipped", "rejected")]
        for reason in (*failures, "rejected"):
            self._fallbacks.labels(reason=reason)
        for reason in failures:
            self._champion_fallbacks.labels(reason=reason)
        for reason in (*failures, "not_ready", "log_unavailable"):
            self._unavailable.labels(reason=reason)
        pairs = metrics.counter("kingmaker_router_pairs")  # every outcome starts at 0, for the same reason
        self._pairs = {arm: {o: pairs.labels(arm=arm.value, outcome=o) for o in PAIR_OUTCOMES} for arm in Arm}
        self.champion_fallbacks = 0  # rows the challenger answered for a failed champion, since start (/routing)
        self._off_path: set[asyncio.Task[None]] = set()

    def _schema(self, request_id: str | None) -> FeatureSchema:
        schema = self.pool.schema
        if schema is None:
            self._unavailable.labels(reason="not_ready").inc()
            raise Unavailable(ErrorCode.NOT_READY, "router is not ready: the champion arm has not answered yet",
                              request_id, reason="not_ready")
        return schema

    async def predict(self, request: PredictRequest, request_id: str) -> Prediction:
        """Route one transaction."""
        problems = row_problems(request.features, self._schema(request_id))
        if problems:
            raise InvalidRequest(problems)
        return (await self._route([request], [request_id], single=True))[0]

    async def predict_batch(self, rows: Sequence[PredictRequest]) -> list[Prediction]:
        """Route each row (sticky per routing key); each arm's share is scored in one call."""
        schema = self._schema(None)
        check_batch_size(len(rows), self.max_batch_rows)
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
        return await self._route(rows, [r.request_id or new_id() for r in rows], single=False)

    async def _route(self, rows: Sequence[PredictRequest], ids: Sequence[str], *, single: bool) -> list[Prediction]:
        started = time.perf_counter()
        ts = logs.now()
        cfg = self.config.current()
        mode = cfg.mode
        has_challenger = Arm.CHALLENGER in self.pool.clients
        weight = cfg.challenger_weight if (mode is Mode.SPLIT and has_challenger) else 0.0
        keys = [routing_key(rid, r.ids, cfg.routing_field) for rid, r in zip(ids, rows, strict=True)]
        groups: dict[Arm, list[int]] = {Arm.CHAMPION: [], Arm.CHALLENGER: []}
        for i, key in enumerate(keys):
            groups[choose_arm(key, weight, cfg.salt)].append(i)
        for arm, idx in groups.items():
            if idx:
                self._routed.labels(arm=arm.value, mode=mode.value).inc(len(idx))
        features = [r.features for r in rows]
        served = await self._score(groups, features, ids, cfg, single)
        done = time.perf_counter()
        self._log([logs.prediction_row(
            request_id=ids[i], ts=ts, routing_key=keys[i], arm=arm, served=True, mode=mode,
            model_name=answer.model_name, model_version=answer.model_version, score=answer.score,
            decision=answer.decision, threshold=answer.threshold, latency_ms=latency_ms, features=features[i])
            for i, (arm, answer, latency_ms, _) in enumerate(served)], ids[0] if single else None)
        out: list[Prediction] = []
        for i, (arm, answer, _, fallback) in enumerate(served):
            self._requests.labels(arm=arm.value, model_version=answer.model_version, mode=mode.value, code="200").inc()
            out.append(Prediction.model_construct(
                request_id=ids[i], arm=arm.value, model_name=answer.model_name, model_version=answer.model_version,
                score=answer.score, decision=answer.decision, threshold=answer.threshold, mode=mode.value,
                fallback=fallback))
        if mode is Mode.SHADOW and has_challenger:
            self.score_off_path(Arm.CHALLENGER, cfg, features, ids, keys, ts, single)
        elif weight > 0.0 and cfg.pairing > 0.0:
            self._pair(served, cfg, features, ids, keys, ts, single)
        if single:
            self._latency.labels(arm=out[0].arm, model_version=out[0].model_version, mode=mode.value).observe(
                done - started)
        return out

    def _pair(self, served: Sequence[Served], cfg: RouterConfig, features: Sequence[Features], ids: Sequence[str],
              keys: Sequence[str], ts: datetime, single: bool) -> None:
        """Split mode: the other arm scores the sampled answered rows off the response path, so the log holds
        the pair (served and not served, one request id). Rows answered by a fallback are not paired, only
        counted: the other arm has just failed them. So every sampled answered row has one pair outcome."""
        others: dict[Arm, list[int]] = {Arm.CHAMPION: [], Arm.CHALLENGER: []}
        for i, (arm, _, _, fallback) in enumerate(served):
            if pair_sampled(ids[i], cfg.pairing, cfg.salt):
                other = Arm.CHALLENGER if arm is Arm.CHAMPION else Arm.CHAMPION
                if fallback:
                    self._pairs[other]["fallback"].inc()
                else:
                    others[other].append(i)
        for arm, idx in others.items():
            if idx:
                self.score_off_path(arm, cfg, [features[i] for i in idx], [ids[i] for i in idx],
                                    [keys[i] for i in idx], ts, single, pairing=True)

    def _log(self, rows: list[dict[str, Any]], request_id: str | None) -> None:
        """Every answered row goes to the log's segment before the answer is returned: if it cannot, no answer."""
        try:
            self.predictions.add(rows)
        except LogUnavailable as exc:
            self._unavailable.labels(reason="log_unavailable").inc()
            rate_limited("log_unavailable", "answering 503: %s", exc, level=logging.ERROR)
            raise Unavailable(ErrorCode.PREDICTION_LOG_UNAVAILABLE, "the prediction could not be logged, so it is "
                              "not given; retry later", request_id, reason="log_unavailable") from exc

    async def _score(self, groups: Mapping[Arm, list[int]], features: Sequence[Features], ids: Sequence[str],
                     cfg: RouterConfig, single: bool) -> list[Served]:
        """Score each group on its arm; the challenger's rows on the champion when the challenger fails, and the
        champion's on the challenger when the champion fails and ``champion_fallback`` says so (split mode)."""
        served: list[Served | None] = [None] * len(ids)

        async def call(arm: Arm, idx: list[int]) -> tuple[list[ArmAnswer], float]:
            started = time.perf_counter()
            timeout = cfg.champion_timeout_ms if arm is Arm.CHAMPION else cfg.challenger_timeout_ms
            answers = await self.pool.score(arm, [features[i] for i in idx], [ids[i] for i in idx], timeout,
                                            single=single)
            return answers, (time.perf_counter() - started) * 1000.0

        def keep(arm: Arm, idx: list[int], result: tuple[list[ArmAnswer], float], fallback: bool) -> None:
            answers, latency_ms = result
            for i, answer in zip(idx, answers, strict=True):
                served[i] = (arm, answer, latency_ms, fallback)

        champion, challenger = groups[Arm.CHAMPION], groups[Arm.CHALLENGER]
        # both arms at once when both have rows (batches only); a single request awaits its one call directly
        champion_call = asyncio.ensure_future(call(Arm.CHAMPION, champion)) if champion and challenger else None
        fallback: list[int] = []
        if challenger:
            try:
                keep(Arm.CHALLENGER, challenger, await call(Arm.CHALLENGER, challenger), False)
            except (ArmFailure, ArmRejected) as exc:
                log.debug("falling back to the champion for %d row(s): %s", len(challenger), exc)
                self._fallbacks.labels(reason=exc.reason).inc(len(challenger))
                fallback = challenger
        try:
            if champion:
                keep(Arm.CHAMPION, champion, await (champion_call or call(Arm.CHAMPION, champion)), False)
            if fallback:
                keep(Arm.CHAMPION, fallback, await call(Arm.CHAMPION, fallback), True)
        except ArmFailure as exc:
            unserved = [i for i in (*champion, *fallback) if served[i] is None]
            if not (cfg.champion_fallback is ChampionFallback.CHALLENGER and cfg.mode is Mode.SPLIT and not fallback
                    and Arm.CHALLENGER in self.pool.clients):
                raise self._champion_down(exc, cfg, ids[0] if single else None, "") from exc
            try:
                keep(Arm.CHALLENGER, unserved, await call(Arm.CHALLENGER, unserved), True)
            except (ArmFailure, ArmRejected) as last:
                raise self._champion_down(exc, cfg, ids[0] if single else None,
                                          f"; the challenger could not stand in: {last}") from exc
            self._champion_fallbacks.labels(reason=exc.reason).inc(len(unserved))
            self.champion_fallbacks += len(unserved)
            rate_limited("champion-fallback", "the challenger answered %d row(s) for the champion: %s", len(unserved),
                         exc, level=logging.WARNING)
        result = [s for s in served if s is not None]
        assert len(result) == len(served), "every row is answered or the call raised"
        return result

    def _champion_down(self, exc: ArmFailure, cfg: RouterConfig, request_id: str | None, more: str) -> Unavailable:
        """The 503 for a champion that cannot answer: counted; the detail goes to the log, not to the client."""
        self._unavailable.labels(reason=exc.reason).inc()
        self._requests.labels(arm=Arm.CHAMPION.value, model_version="", mode=cfg.mode.value, code="503").inc()
        rate_limited(f"champion-{exc.reason}", "answering 503: %s%s", exc, more, level=logging.WARNING)
        return Unavailable(ErrorCode.CHAMPION_UNAVAILABLE, "the champion cannot answer right now; retry later",
                           request_id, reason=exc.reason)

    def score_off_path(self, arm: Arm, cfg: RouterConfig, features: Sequence[Features], ids: Sequence[str],
                       keys: Sequence[str], ts: datetime, single: bool, *, pairing: bool = False) -> None:
        """Score the same rows on ``arm`` off the response path (a task; at most ``shadow_max_in_flight`` at a
        time, more are skipped and counted) and log them as not served. Shadow mode uses it for the challenger,
        split mode's ``pairing`` for the arm that did not answer: its calls bypass the arm's circuit breaker
        (an off-path failure must not open the circuit of the rows the arm answers) and skip an open circuit."""
        client = self.pool.clients.get(arm)
        pairs = self._pairs[arm] if pairing else None
        if client is None:  # removed by a configuration change meanwhile
            if pairs is not None:
                pairs["failed"].inc(len(ids))
            return
        if len(self._off_path) >= cfg.shadow_max_in_flight:
            client.count("shadow_skipped")
            if pairs is not None:
                pairs["skipped"].inc(len(ids))
            return
        if pairs is not None and client.breaker.is_open:
            pairs["circuit_open"].inc(len(ids))
            return

        async def run() -> None:
            started = time.perf_counter()
            try:
                answers = await self.pool.score(arm, features, ids, cfg.shadow_timeout_ms, single=single,
                                                breaker=not pairing)
            except Exception as exc:  # any error: a task that died unseen would leave its rows unpaired, uncounted
                if isinstance(exc, (ArmFailure, ArmRejected)):
                    log.debug("off-path call to the %s failed: %s", arm, exc)
                else:
                    rate_limited("off-path-error", "off-path call to the %s failed unexpectedly: %r", arm, exc,
                                 level=logging.ERROR)
                if pairs is not None:
                    pairs["failed"].inc(len(ids))
                return
            latency_ms = (time.perf_counter() - started) * 1000.0
            try:
                self.predictions.add([logs.prediction_row(
                    request_id=ids[i], ts=ts, routing_key=keys[i], arm=arm, served=False, mode=cfg.mode,
                    model_name=a.model_name, model_version=a.model_version, score=a.score, decision=a.decision,
                    threshold=a.threshold, latency_ms=latency_ms, features=features[i]) for i, a in enumerate(answers)])
            except LogUnavailable as exc:
                rate_limited("off-path-log", "off-path rows of the %s not logged: %s", arm, exc, level=logging.ERROR)
                if pairs is not None:
                    pairs["log_failed"].inc(len(ids))
                return
            if pairs is not None:
                pairs["paired"].inc(len(ids))

        task = asyncio.create_task(run())
        self._off_path.add(task)
        task.add_done_callback(self._off_path.discard)

    async def finish_off_path(self, timeout_s: float) -> None:
        """Wait (at most ``timeout_s``) for the off-path calls in flight, so their rows are logged."""
        if self._off_path:
            await asyncio.wait(set(self._off_path), timeout=timeout_s)


def _guard(settings: ServingSettings, metrics: Metrics) -> auth.Guard:
    """/feedback always needs a token; scoring and /routing only when scoring tokens are configured."""
    failures = metrics.counter("kingmaker_auth_failures")
    feedback_tokens = auth.TokenStore(settings.feedback_tokens, Path(settings.feedback_token_file)
                                      if settings.feedback_token_file else None)
    if not feedback_tokens.configured:
        log.warning("no /feedback tokens configured (KINGMAKER_FEEDBACK_TOKEN or _FILE): /feedback answers 503")
    protected: dict[str, auth.TokenStore] = {"/feedback": feedback_tokens}
    if settings.scoring_tokens or settings.scoring_token_file:
        scoring = auth.TokenStore(settings.scoring_tokens, Path(settings.scoring_token_file)
                                  if settings.scoring_token_file else None)
        protected.update(dict.fromkeys(("/predict", "/predict_batch", "/routing"), scoring))
    return auth.Guard(protected=protected, max_body_bytes=settings.max_body_bytes,
                      on_denied=lambda path, r: failures.labels(path=path, reason=r.value).inc())


_guard_slot = auth.GuardSlot()


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
        token = auth.OutgoingToken(settings.arm_tokens, Path(settings.arm_token_file) if settings.arm_token_file
                                   else None)
        self.arms = ArmPool(self.metrics, settings.champion_url, settings.challenger_url, token)
        self.config = ConfigWatcher(Path(settings.router_config) if settings.router_config else None,
                                    on_reload=self._on_reload)
        self._on_reload("ok", self.config.current())
        segments = Path(settings.log_segment_dir) if settings.log_segment_dir else default_home() / "serving" / "segments"
        self.predictions = router_log(log_settings.predictions_url, settings, segments, self.metrics)
        self.engine = RoutingEngine(self.arms, self.config, self.predictions, self.metrics, settings.max_batch_rows)
        self.labels = Feedback(FeedbackStore(log_settings.predictions_url, log_settings.labels_url,
                                             settings.feedback_lookup_days),
                               self.predictions.pending_ids, self.metrics, settings.max_batch_rows)
        self.drain = Drain(settings.drain_seconds)
        _guard_slot.guard = _guard(settings, self.metrics)

    def _on_reload(self, outcome: str, cfg: RouterConfig) -> None:
        self.metrics.counter("kingmaker_router_config_reloads").labels(outcome=outcome).inc()
        self._set_gauges(cfg)
        if outcome == "ok":
            self.arms.apply(cfg)

    def _set_gauges(self, cfg: RouterConfig) -> None:
        self.metrics.gauge("kingmaker_router_challenger_weight").set(cfg.challenger_weight)
        self.metrics.gauge("kingmaker_router_champion_fallback_enabled").set(
            cfg.champion_fallback is ChampionFallback.CHALLENGER)

    # --- lifecycle ------------------------------------------------------------------------------
    @bentoml.on_startup
    async def _start(self) -> None:
        if self.drain.install():  # under a real server (not in-process tests)
            settle_heap()
            show_info_logs()
        self.arms.start()  # discovery needs the server's event loop

    def __is_ready__(self) -> bool:
        return self.arms.schema is not None and not self.drain.draining

    async def __metrics__(self, content: str) -> str:
        """Async, so BentoML runs it in the event loop: a config reload seen here re-points arms, and that
        must happen where their discovery can be scheduled (a sync hook runs in a worker thread)."""
        self._set_gauges(self.config.current())
        self.metrics.gauge("kingmaker_prediction_log_lag_seconds").set(self.predictions.lag_seconds)
        return content + self.metrics.exposition()

    @bentoml.on_shutdown
    async def _stop(self) -> None:
        """After the server has finished in-flight requests: wait for off-path calls, then flush the log."""
        await self.engine.finish_off_path(self.config.current().shadow_timeout_ms * 2 / 1000.0 + 2.0)
        await self.arms.aclose()
        pending = self.predictions.pending
        await anyio.to_thread.run_sync(self.predictions.close)
        log.info("router stopped: prediction log flushed (%d rows at shutdown, %d written in total)",
                 pending, self.predictions.written)

    # --- endpoints ------------------------------------------------------------------------------
    @bentoml.api(route="/predict")
    @answers_refusals
    async def predict(self, request: PredictRequest, /, ctx: bentoml.Context) -> Prediction:
        """Route one transaction to an arm and return its score and decision."""
        request_id = request.request_id or new_id()
        headers = ctx.response.headers
        headers[HEADER_REQUEST_ID] = request_id  # on refusals too
        p = await self.engine.predict(request, request_id)
        headers[HEADER_ARM] = p.arm
        headers[HEADER_MODEL_NAME] = p.model_name
        headers[HEADER_MODEL_VERSION] = p.model_version
        headers[HEADER_MODE] = p.mode
        if p.fallback:
            headers[HEADER_FALLBACK] = "true"
        return p

    @bentoml.api(route="/predict_batch")
    @answers_refusals
    async def predict_batch(self, request: PredictBatchRequest, /, ctx: bentoml.Context) -> PredictionBatch:
        """Route each row (sticky per routing key) and score each arm's share in one call."""
        predictions = await self.engine.predict_batch(request.rows)
        ctx.response.headers[HEADER_MODE] = predictions[0].mode
        return PredictionBatch.model_construct(predictions=predictions)

    @bentoml.api(route="/feedback")
    @answers_refusals
    async def feedback(self, request: FeedbackRequest, /, ctx: bentoml.Context) -> FeedbackResult:
        """Record labels for request ids (bearer token required). Idempotent: a label identical to the
        recorded one is not written again; unknown ids are recorded and reported."""
        return await self.labels.record(request.items())

    @bentoml.api(route="/routing")
    async def routing(self, _: Empty, /) -> dict[str, Any]:
        """The traffic configuration in force, why the last change of the file was refused (if it was), what
        each arm serves and how many rows the challenger answered for a failed champion. No internals: arm
        URLs, run ids and file paths are in the configuration and the log, not here."""
        cfg = self.config.current().as_dict()
        return {"config": {k: v for k, v in cfg.items() if k not in ("champion_url", "challenger_url")},
                "config_error": self.config.public_error, "arms": self.arms.describe(),
                "champion_fallbacks": self.engine.champion_fallbacks}


auth.protect(Router, _guard_slot)
