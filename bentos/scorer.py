"""The Scorer: one BentoML service class that serves whichever model version it is pointed at.

Run once per arm, configured by environment (see `kingmaker.settings.ServingSettings`)::

    KINGMAKER_ARM=champion   KINGMAKER_MODEL_URI=models:/fraud-detector@champion   bentoml serve bentos.scorer:Scorer --port 3001
    KINGMAKER_ARM=challenger KINGMAKER_MODEL_URI=models:/fraud-detector@challenger bentoml serve bentos.scorer:Scorer --port 3002

The alias is resolved to a version once, at start-up; that version is in every response, header and
metric. With ``KINGMAKER_MODEL_CACHE`` the Scorer keeps a copy of what it resolved (`bentos.model_cache`): if
the registry is unreachable at start-up it serves the cached version of the same reference — says so in a
warning line, in ``/info`` (``model_source: cache``) and in ``kingmaker_scorer_model_from_cache`` — and
retries the registry every ``KINGMAKER_REGISTRY_RETRY_SECONDS`` in the background; with no copy it stays
unready (one error line) until the registry answers. Serving never waits for the registry. Requests are
validated against the model signature (4xx naming the field, never a 5xx for bad input). Endpoints:

- ``POST /score`` one row; ``POST /score_batch`` JSON rows; ``POST /arrow/score_batch`` an Arrow IPC
  stream (one column per feature), the fast path for large batches;
- ``POST /explain`` the top contributing features (XGBoost ``pred_contribs``);
- ``POST /info`` model name, version, alias, threshold and signature, and where the model came from
  (the Router reads it);
- ``GET /livez``, ``GET /readyz`` (after the model is loaded and warmed, false once SIGTERM arrives),
  ``GET /metrics``.

Adaptive batching is not used: one row costs ~0.1 ms in ``inplace_predict`` against ~1 ms of HTTP
handling, so merging single-row requests would add queueing delay for little gain; batches that pay
come through ``/score_batch`` and ``/arrow/score_batch`` instead.
"""

from __future__ import annotations

import os

# Before XGBoost (and its OpenMP runtime) is loaded: idle OpenMP threads sleep instead of spinning.
# Spinning threads next to the event loop cut throughput ~25x on a 2-core machine (see bentos.procs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import logging
import time
import uuid
from pathlib import Path
from typing import Any

import anyio.to_thread
import bentoml
import numpy as np
import numpy.typing as npt
import pyarrow as pa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bentos import auth, edge, model_cache
from bentos.answers import Refusal, answers_refusals, error_body, error_response
from bentos.arrow_input import ARROW_FILE, ARROW_STREAM, read_table
from bentos.lifecycle import Drain, fix_bentoml_request_timers, settle_heap, show_info_logs
from bentos.messages import (
    HEADER_ARM,
    HEADER_MODEL_NAME,
    HEADER_MODEL_VERSION,
    HEADER_REQUEST_ID,
    BatchRequest,
    BatchScored,
    Contribution,
    Empty,
    ErrorCode,
    ExplainRequest,
    Explanation,
    ModelInfo,
    Scored,
    ScoreRequest,
)
from bentos.metrics import SCORER_SPECS, Metrics, observe_many
from bentos.validation import FeatureSchema, InvalidRequest, Problem, row_vector, rows_matrix, table_matrix
from kingmaker import mlflow_errors, models
from kingmaker.errors import TemporaryError
from kingmaker.settings import MlflowSettings, ServingSettings

log = logging.getLogger(__name__)
fix_bentoml_request_timers()  # see its docstring: without it p99 latency has 300-500 ms GC spikes
edge.install()  # bounded path labels, error answers of our shape, client errors logged in one line

THREAD_ROWS = 512  # batches at least this large are scored off the event loop


class ScoringEngine:
    """Validation, scoring, decisions and metrics for one loaded model; no HTTP here."""

    def __init__(self, model: models.FraudModel, arm: str, max_batch_rows: int, metrics: Metrics):
        self.model = model
        self.schema = FeatureSchema.from_columns(model.signature)  # requests are validated against it
        self.arm = arm
        self.max_batch_rows = max_batch_rows
        self.metrics = metrics
        self.name = model.ref.name
        self.version = model.ref.version
        self.headers = {HEADER_ARM: arm, HEADER_MODEL_NAME: self.name, HEADER_MODEL_VERSION: self.version}
        labels = {"arm": arm, "model_version": self.version}
        self._predictions = metrics.counter("kingmaker_predictions").labels(**labels)
        self._scores = metrics.histogram("kingmaker_score").labels(**labels)
        self._fraud = metrics.counter("kingmaker_decisions").labels(decision="fraud", **labels)
        self._legit = metrics.counter("kingmaker_decisions").labels(decision="legit", **labels)
        self._requests = metrics.counter("kingmaker_scorer_requests")
        self._duration = metrics.histogram("kingmaker_scorer_request_duration_seconds")
        self._errors = metrics.counter("kingmaker_scorer_errors")
        self._labels = labels
        metrics.gauge("kingmaker_scorer_model_info").labels(arm=arm, model_name=self.name,
                                                            model_version=self.version).set(1)
        self._from_cache = metrics.gauge("kingmaker_scorer_model_from_cache").labels(
            arm=arm, model_name=self.name, model_version=self.version)
        self.cached_at: float | None = None
        self.registry_error: str | None = None
        self.served_from_registry()

    def served_from_cache(self, cached_at: float, error: str) -> None:
        self.cached_at, self.registry_error = cached_at, error
        self._from_cache.set(1)

    def served_from_registry(self) -> None:
        self.cached_at = self.registry_error = None
        self._from_cache.set(0)

    def warm_up(self) -> None:
        """Exercise every code path once so the first real request pays no lazy initialisation."""
        zeros = np.zeros((1, len(self.schema.names)))
        self.model.predict_proba(zeros)
        self.model.predict_proba(np.zeros((THREAD_ROWS, len(self.schema.names))))
        self.model.contributions(zeros)

    def observe(self, endpoint: str, code: int, seconds: float, reason: str | None = None) -> None:
        self._requests.labels(endpoint=endpoint, code=str(code), **self._labels).inc()
        self._duration.labels(endpoint=endpoint, **self._labels).observe(seconds)
        if reason:
            self._errors.labels(endpoint=endpoint, reason=reason, **self._labels).inc()

    def record(self, scores: npt.NDArray[np.float64], decisions: npt.NDArray[np.bool_]) -> None:
        n = len(scores)
        self._predictions.inc(n)
        fraud = int(decisions.sum())
        if fraud:
            self._fraud.inc(fraud)
        if n - fraud:
            self._legit.inc(n - fraud)
        if n <= 64:
            for s in scores:
                self._scores.observe(float(s))
        else:
            observe_many(self._scores, scores)

    def score_matrix(self, x: npt.NDArray[Any]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
        scores = self.model.predict_proba(x)
        decisions = self.model.decide(scores)
        self.record(scores, decisions)
        return scores, decisions

    def info(self) -> ModelInfo:
        ref = self.model.ref
        return ModelInfo(arm=self.arm, model_name=ref.name, model_version=ref.version, alias=ref.alias,
                         run_id=ref.run_id, flavor=self.model.flavor, threshold=self.model.threshold,
                         features=list(self.schema.names), feature_types=list(self.schema.types),
                         model_source="registry" if self.cached_at is None else "cache", cached_at=self.cached_at,
                         registry_error=self.registry_error)


def _new_id() -> str:
    return uuid.uuid4().hex


def _set_headers(ctx: bentoml.Context, headers: dict[str, str]) -> None:
    for k, v in headers.items():
        ctx.response.headers[k] = v


async def _arrow_batch(request: Request) -> Response:
    service: Scorer = bentoml.get_current_service()
    return await service.arrow_batch(request)


arrow_app = Starlette(routes=[Route("/score_batch", _arrow_batch, methods=["POST"])])
_guard = auth.GuardSlot()


@bentoml.asgi_app(arrow_app, path="/arrow", name="arrow")
@bentoml.service(
    name="kingmaker-scorer",
    workers=1,
    traffic={"timeout": 60},
    logging={"access": {"enabled": False}},  # per-request log lines cost ~10% throughput; metrics count requests
)
class Scorer:
    """Serves one registered model version (see the module docstring)."""

    def __init__(self) -> None:
        settings = ServingSettings.from_env()
        self.settings = settings
        self.metrics = Metrics(SCORER_SPECS)
        self._engine: ScoringEngine | None = None
        self._retry: model_cache.RegistryRetry | None = None
        self.cache = model_cache.ModelCache(Path(settings.model_cache)) if settings.model_cache else None
        mlflow_errors.bound_http_retries()  # "the registry is down" within seconds, not minutes
        self.client = MlflowSettings.from_env().client()
        self.drain = Drain(settings.drain_seconds)
        self._start_serving()
        # clients' scoring tokens and the Router's own: either opens the scoring endpoints
        files = [Path(f) for f in (settings.scoring_token_file, settings.arm_token_file) if f]
        tokens = auth.TokenStore((*settings.scoring_tokens, *settings.arm_tokens), *files)
        protected = (dict.fromkeys(("/score", "/score_batch", "/explain", "/info", "/arrow/score_batch"), tokens)
                     if tokens.configured or files else {})
        self.max_body_bytes = settings.max_body_bytes
        _guard.guard = auth.Guard(protected=protected, max_body_bytes=settings.max_body_bytes)

    # --- the model: from the registry, else the local cache; retried in the background --------------
    def _start_serving(self) -> None:
        """Serve the version the registry resolves ``model_uri`` to; when the registry is unreachable, the
        cached version of the same reference (else nothing: not ready), and keep retrying the registry."""
        uri = self.settings.model_uri
        started = time.perf_counter()
        try:
            self._serve(model_cache.fetch(self.client, uri, self.cache), started)
            return
        except TemporaryError as exc:
            error = str(exc)
        cached = model_cache.from_cache(self.cache, uri)
        every = f"retrying every {self.settings.registry_retry_seconds:g}s"
        if cached is None:
            where = f"in {self.cache.root}" if self.cache else "(KINGMAKER_MODEL_CACHE is not set)"
            log.error("scorer %s: NOT READY: the registry is unreachable and there is no cached copy of %s %s; "
                      "%s: %s", self.settings.arm, uri, where, every, error)
        else:
            model, cached_at = cached
            engine = self._serve(model, started)
            engine.served_from_cache(cached_at, error)
            log.warning("scorer %s: serving the CACHED %s version %s (%s, cached %s) because the registry is "
                        "unreachable; %s: %s", self.settings.arm, model.ref.name, model.ref.version, uri,
                        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cached_at)), every, error)
        self._retry = model_cache.RegistryRetry(self._registry_back, self.settings.registry_retry_seconds,
                                                self._still_down).start()

    def _serve(self, model: models.FraudModel, started: float) -> ScoringEngine:
        engine = ScoringEngine(model, self.settings.arm, self.settings.max_batch_rows, self.metrics)
        engine.warm_up()
        self._engine = engine
        log.info("scorer %s: %s version %s (%s) loaded and warmed in %.1fs; %d features", self.settings.arm,
                 model.ref.name, model.ref.version, self.settings.model_uri, time.perf_counter() - started,
                 len(engine.schema.names))
        return engine

    def _still_down(self, exc: Exception) -> None:
        if self._engine is not None:
            self._engine.registry_error = str(exc)
        log.warning("scorer %s: registry still unreachable: %s", self.settings.arm, exc)

    def _registry_back(self) -> None:
        """One retry: resolve again. Serving nothing -> load it (and cache it) and become ready. Serving the
        cached copy of the version the registry names -> it is confirmed; of another version (an alias that
        moved during the outage) -> keep serving it: a restart picks the new one up, as after any move."""
        started = time.perf_counter()
        engine = self._engine
        if engine is None:
            self._serve(model_cache.fetch(self.client, self.settings.model_uri, self.cache), started)
            log.info("scorer %s: the registry is reachable again; now READY", self.settings.arm)
            return
        name, ref = models.parse_model_uri(self.settings.model_uri)
        now = models.resolve(self.client, name, ref)
        if now.version == engine.version:
            engine.served_from_registry()
            log.info("scorer %s: the registry is reachable again and confirms the cached version %s of %s",
                     self.settings.arm, engine.version, self.settings.model_uri)
        else:
            engine.registry_error = f"{self.settings.model_uri} now resolves to version {now.version}; restart to serve it"
            log.warning("scorer %s: the registry is reachable again but %s now resolves to version %s; this "
                        "process keeps serving the cached version %s until it is restarted", self.settings.arm,
                        self.settings.model_uri, now.version, engine.version)

    @property
    def engine(self) -> ScoringEngine:
        """The loaded model; until there is one (registry down, no cache) every endpoint answers 503."""
        engine = self._engine
        if engine is None:
            raise Refusal(503, error_body(ErrorCode.NOT_READY, "no model loaded yet: the registry is unreachable"))
        return engine

    @bentoml.on_startup
    def _started(self) -> None:
        if self.drain.install():  # under a real server (not in-process tests)
            settle_heap()
            show_info_logs()

    def __is_ready__(self) -> bool:
        return self._engine is not None and not self.drain.draining

    def __metrics__(self, content: str) -> str:
        return content + self.metrics.exposition()

    def _one_row(self, endpoint: str, features: Any, request_id: str | None, ctx: bentoml.Context,
                 started: float) -> tuple[npt.NDArray[np.float64], str]:
        """Validate one transaction: (row vector, request id), the audit headers set on ``ctx`` (they go
        with a refusal too). Invalid input is counted and raised."""
        engine = self.engine
        request_id = request_id or _new_id()
        _set_headers(ctx, {**engine.headers, HEADER_REQUEST_ID: request_id})
        try:
            x = row_vector(features, engine.schema)
        except InvalidRequest as exc:
            engine.observe(endpoint, exc.status, time.perf_counter() - started, "invalid_input")
            raise
        return x, request_id

    # --- endpoints ------------------------------------------------------------------------------
    @bentoml.api(route="/score")
    @answers_refusals
    async def score(self, request: ScoreRequest, /, ctx: bentoml.Context) -> Scored:
        """Score one transaction."""
        started = time.perf_counter()
        engine = self.engine
        x, request_id = self._one_row("score", request.features, request.request_id, ctx, started)
        scores, decisions = engine.score_matrix(x)
        engine.observe("score", 200, time.perf_counter() - started)
        return Scored(request_id=request_id, arm=engine.arm, model_name=engine.name, model_version=engine.version,
                      score=float(scores[0]), decision=bool(decisions[0]), threshold=engine.model.threshold)

    @bentoml.api(route="/score_batch")
    @answers_refusals
    async def score_batch(self, request: BatchRequest, /, ctx: bentoml.Context) -> BatchScored:
        """Score a batch of JSON rows (up to max_batch_rows)."""
        started = time.perf_counter()
        engine = self.engine
        _set_headers(ctx, engine.headers)
        try:
            if request.request_ids is not None and len(request.request_ids) != len(request.rows):
                raise InvalidRequest([Problem(("request_ids",), f"has {len(request.request_ids)} ids for "
                                              f"{len(request.rows)} rows", "length_mismatch")])
            x = rows_matrix(request.rows, engine.schema, engine.max_batch_rows)
        except InvalidRequest as exc:
            reason = "too_large" if exc.status == 413 else "invalid_input"
            engine.observe("score_batch", exc.status, time.perf_counter() - started, reason)
            raise
        if len(x) >= THREAD_ROWS:
            scores, decisions = await anyio.to_thread.run_sync(engine.score_matrix, x)
        else:
            scores, decisions = engine.score_matrix(x)
        ids = request.request_ids or [_new_id() for _ in range(len(x))]
        engine.observe("score_batch", 200, time.perf_counter() - started)
        return BatchScored.model_construct(arm=engine.arm, model_name=engine.name, model_version=engine.version,
                                           threshold=engine.model.threshold, request_ids=ids,
                                           scores=scores.tolist(), decisions=decisions.tolist())

    @bentoml.api(route="/explain")
    @answers_refusals
    async def explain(self, request: ExplainRequest, /, ctx: bentoml.Context) -> Explanation:
        """Score one transaction and return its top_k features by absolute contribution."""
        started = time.perf_counter()
        engine = self.engine
        x, request_id = self._one_row("explain", request.features, request.request_id, ctx, started)
        scores, decisions = engine.score_matrix(x)
        contribs = engine.model.contributions(x)
        top: list[Contribution] | None = None
        if contribs is not None:
            row = contribs[0]
            order = np.argsort(-np.abs(row), kind="stable")[: request.top_k]
            top = [Contribution(feature=engine.schema.names[i], value=float(x[0, i]), contribution=float(row[i]))
                   for i in order]
        engine.observe("explain", 200, time.perf_counter() - started)
        return Explanation(request_id=request_id, arm=engine.arm, model_name=engine.name,
                           model_version=engine.version, score=float(scores[0]), decision=bool(decisions[0]),
                           threshold=engine.model.threshold, contributions=top)

    @bentoml.api(route="/info")
    @answers_refusals
    async def info(self, _: Empty, /, ctx: bentoml.Context) -> ModelInfo:
        """The served model version and its signature."""
        return self.engine.info()

    async def arrow_batch(self, request: Request) -> Response:
        """``POST /arrow/score_batch``: an Arrow IPC stream or file; optional ``request_id`` string column.
        Answers JSON like /score_batch, or Arrow (columns score, decision) when ``Accept`` asks for it. The
        body is measured before it is decompressed (`bentos.arrow_input`)."""
        started = time.perf_counter()
        try:
            engine = self.engine
        except Refusal as exc:
            return error_response(None, exc, {})
        headers = dict(engine.headers)
        media = request.headers.get("content-type", "").split(";")[0].strip()
        if media not in (ARROW_STREAM, ARROW_FILE):
            engine.observe("arrow_score_batch", 415, time.perf_counter() - started, "invalid_input")
            return error_response(None, Refusal(415, error_body(
                ErrorCode.UNSUPPORTED_MEDIA_TYPE, f"Content-Type must be {ARROW_STREAM} or {ARROW_FILE}")), headers)
        body = await request.body()
        try:
            table = read_table(body, media, max_rows=engine.max_batch_rows, max_bytes=self.max_body_bytes,
                               max_columns=len(engine.schema.names) + 1)
        except InvalidRequest as exc:
            reason = "too_large" if exc.status == 413 else "invalid_input"
            engine.observe("arrow_score_batch", exc.status, time.perf_counter() - started, reason)
            return error_response(None, exc, headers)
        ids: list[str] | None = None
        if "request_id" in table.column_names:
            col = table.column("request_id")
            if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)) or col.null_count:
                engine.observe("arrow_score_batch", 400, time.perf_counter() - started, "invalid_input")
                return error_response(None, InvalidRequest([Problem(("columns", "request_id"), "must be a string "
                                                                     "column without nulls", "column_type")]), headers)
            ids = col.to_pylist()
            table = table.drop_columns(["request_id"])
        try:
            x = table_matrix(table, engine.schema, engine.max_batch_rows)
        except InvalidRequest as exc:
            reason = "too_large" if exc.status == 413 else "invalid_input"
            engine.observe("arrow_score_batch", exc.status, time.perf_counter() - started, reason)
            return error_response(None, exc, headers)
        if len(x) >= THREAD_ROWS:
            scores, decisions = await anyio.to_thread.run_sync(engine.score_matrix, x)
        else:
            scores, decisions = engine.score_matrix(x)
        engine.observe("arrow_score_batch", 200, time.perf_counter() - started)
        if ARROW_STREAM in request.headers.get("accept", ""):
            out = pa.table({"score": scores, "decision": decisions})
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, out.schema) as writer:
                writer.write_table(out)
            return Response(sink.getvalue().to_pybytes(), media_type=ARROW_STREAM, headers=headers)
        ids = ids or [_new_id() for _ in range(len(x))]
        body_out = BatchScored.model_construct(arm=engine.arm, model_name=engine.name, model_version=engine.version,
                                               threshold=engine.model.threshold, request_ids=ids,
                                               scores=scores.tolist(), decisions=decisions.tolist())
        return Response(body_out.model_dump_json(), media_type="application/json", headers=headers)


auth.protect(Scorer, _guard)
