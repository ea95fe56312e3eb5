"""The Router's side of the arms: an HTTP client per arm's Scorer, and the pool that keeps them current.

`ArmClient`: pooled keep-alive connections to one Scorer, per-call timeouts, one retry of a dropped
connection, a circuit breaker, and the upstream metrics labelled with the version the arm serves.
`ArmPool`: where each arm is (the environment's URL, or the one in ``router.yaml``), what it serves (its
``/info``, fetched until it answers: arms may start after the Router), re-pointing an arm when its URL
changes (the replaced client finishes its requests and is closed later), and re-reading an arm's
signature when it starts answering with a new version. The champion's signature is the one requests are
validated against.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

import aiohttp

from bentos.answers import RateLimitedLog, Refusal
from bentos.auth import OutgoingToken
from bentos.messages import ModelInfo
from bentos.metrics import Metrics
from bentos.routing import CircuitBreaker
from bentos.validation import FeatureSchema
from kingmaker.roles import Arm
from kingmaker.router_config import RouterConfig

log = logging.getLogger(__name__)
rate_limited = RateLimitedLog(log)
T = TypeVar("T")

UPSTREAM_OUTCOMES = ("ok", "timeout", "connect_error", "http_error", "auth_error", "bad_response", "circuit_open",
                     "rejected", "shadow_skipped")
_JSON_HEADERS = {"Content-Type": "application/json"}


class ArmFailure(Exception):
    """The arm did not give a usable answer (``reason``: timeout, connect_error, http_error, ...)."""

    def __init__(self, arm: Arm, reason: str, detail: str):
        self.arm = arm
        self.reason = reason
        super().__init__(f"{arm} arm: {reason}: {detail}")


class ArmRejected(Refusal):
    """The arm answered 4xx: it considers the input invalid. Its answer goes to the client as it is."""

    reason = "rejected"

    def __init__(self, arm: Arm, status: int, body: Mapping[str, Any]):
        super().__init__(status, body)
        self.arm = arm


class ArmAnswer(NamedTuple):
    """One row scored by an arm."""

    model_name: str
    model_version: str
    score: float
    decision: bool
    threshold: float


class ArmClient:
    """Pooled keep-alive connections to one arm's Scorer, per-call timeouts and a circuit breaker.

    aiohttp rather than httpx: profiling the Router under load showed ~40% of its CPU inside httpx's
    request path (pure-Python HTTP/1.1 plus anyio plumbing) against ~10% with aiohttp (C parser), which
    BentoML itself uses for its service-to-service clients.
    """

    def __init__(self, arm: Arm, url: str, metrics: Metrics, *,
                 connector: Callable[[], aiohttp.BaseConnector] | None = None, max_connections: int = 64,
                 token: OutgoingToken | None = None):
        self.arm = arm
        self.url = url.rstrip("/")
        self._token = token
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

    async def call(self, path: str, payload: Mapping[str, Any], timeout_ms: float, parse: Callable[[dict[str, Any]], T],
                   *, guarded: bool = True, breaker: bool = True) -> T:
        """POST ``payload`` to the arm; ``parse`` of its JSON answer, or `ArmFailure` / `ArmRejected`. An
        answer ``parse`` cannot read (KeyError, TypeError, ValueError) is the arm's fault: ``bad_response``.

        ``guarded`` calls (traffic) are counted and, with ``breaker``, go through the circuit breaker; discovery
        calls are neither. Pairing calls pass ``breaker=False``: an arm's failure to score a row it did not answer
        must not open the circuit that guards the rows it does answer.
        """
        now = time.monotonic()
        breaker = guarded and breaker
        if breaker and not self.breaker.allow(now):
            self.count("circuit_open")
            raise ArmFailure(self.arm, "circuit_open", "too many recent failures; skipping it for a while")
        deadline = now + timeout_ms / 1000.0
        started = time.perf_counter()
        data = json.dumps(payload).encode()
        url = self.url + path
        headers = {**_JSON_HEADERS, **self._token.headers()} if self._token is not None else _JSON_HEADERS
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self.session.post(url, data=data, headers=headers,
                                             timeout=self._timeout(timeout_ms)) as resp:
                    status = resp.status
                    raw = await resp.read()
                break
            except TimeoutError:
                raise self._failure(guarded, breaker, "timeout", f"no answer within {timeout_ms:.0f} ms") from None
            except aiohttp.ClientError as exc:
                # A pooled connection closed under us, or the arm is down. Scoring is pure, so one
                # retry is safe; a dead arm fails fast again (connection refused).
                if attempt == 1 and time.monotonic() < deadline:
                    continue
                raise self._failure(guarded, breaker, "connect_error", f"{type(exc).__name__}: {exc}") from None
        if guarded:
            self._children()[1].observe(time.perf_counter() - started)
        if status in (401, 403):  # the arm refuses the Router's own token: a configuration fault, not the client's
            raise self._failure(guarded, breaker, "auth_error", f"HTTP {status}: the arm refuses the Router's token "
                                "(KINGMAKER_ARM_TOKEN or _FILE must be one the Scorer accepts)")
        if status >= 500 or status in (404, 405):
            raise self._failure(guarded, breaker, "http_error", f"HTTP {status}: {raw[:200]!r}")
        try:
            body = json.loads(raw)
        except ValueError:
            raise self._failure(guarded, breaker, "bad_response", f"HTTP {status} with a non-JSON body") from None
        if status >= 400:
            if breaker:
                self.breaker.record_success()  # the arm is healthy; it just refused this input
            if guarded:
                self.count("rejected")
            raise ArmRejected(self.arm, status, body if isinstance(body, dict) else {"error": body})
        if not isinstance(body, dict):
            raise self._failure(guarded, breaker, "bad_response", "JSON answer is not an object")
        try:
            result = parse(body)
        except (KeyError, TypeError, ValueError) as exc:
            raise self._failure(guarded, breaker, "bad_response",
                                f"unreadable answer ({type(exc).__name__}: {exc}): {raw[:200]!r}") from None
        if breaker:
            self.breaker.record_success()
        if guarded:
            self.count("ok")
        return result

    def _failure(self, guarded: bool, breaker: bool, reason: str, detail: str) -> ArmFailure:
        if breaker:
            self.breaker.record_failure(time.monotonic())
        if guarded:
            self.count(reason)
        return ArmFailure(self.arm, reason, detail)

    async def score(self, features: Sequence[Mapping[str, Any]], request_ids: Sequence[str], timeout_ms: float, *,
                    single: bool, breaker: bool = True) -> list[ArmAnswer]:
        """Score rows: one request on ``/score`` when ``single``, else all on ``/score_batch`` (whose
        timeout grows with the batch: ``timeout_ms`` per 100 rows)."""
        if single:
            return await self.call("/score", {"features": features[0], "request_id": request_ids[0]}, timeout_ms,
                                   _one_answer, breaker=breaker)
        return await self.call("/score_batch", {"rows": features, "request_ids": request_ids},
                               timeout_ms * max(1.0, len(request_ids) / 100.0),
                               lambda a: _batch_answers(a, len(request_ids)), breaker=breaker)

    async def fetch_info(self, timeout_ms: float = 2000.0) -> ModelInfo:
        self.info = await self.call("/info", {}, timeout_ms, ModelInfo.model_validate, guarded=False)
        return self.info

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def _one_answer(a: dict[str, Any]) -> list[ArmAnswer]:
    return [ArmAnswer(a["model_name"], str(a["model_version"]), a["score"], a["decision"], a["threshold"])]


def _batch_answers(a: dict[str, Any], rows: int) -> list[ArmAnswer]:
    name, version, threshold = a["model_name"], str(a["model_version"]), a["threshold"]
    answers = [ArmAnswer(name, version, s, d, threshold) for s, d in zip(a["scores"], a["decisions"], strict=True)]
    if len(answers) != rows:
        raise ValueError(f"{len(answers)} scores for {rows} rows")
    return answers


def make_connector(url: str) -> Callable[[], aiohttp.BaseConnector] | None:
    """How to reach an arm URL: None = real TCP. Tests replace this to call in-process apps."""
    return None


class ArmPool:
    """The arm clients of one Router (see the module docstring). Discovery and deferred closes run as
    background tasks of the server's event loop, from `start` on."""

    def __init__(self, metrics: Metrics, champion_url: str, challenger_url: str, token: OutgoingToken | None = None):
        self.metrics = metrics
        self.token = token
        self.env_urls = {Arm.CHAMPION: champion_url, Arm.CHALLENGER: challenger_url}
        self.clients: dict[Arm, ArmClient] = {}
        self.schema: FeatureSchema | None = None  # the champion's signature, once it has answered /info
        self._started = False
        self._retired: set[ArmClient] = set()  # replaced clients, closed once their requests are done
        self._background: set[asyncio.Task[None]] = set()
        self._refreshing: set[Arm] = set()

    def urls(self, cfg: RouterConfig) -> dict[Arm, str]:
        """Where each arm is: the config file's URL when it names one, else the environment's."""
        urls = {Arm.CHAMPION: cfg.champion_url or self.env_urls[Arm.CHAMPION],
                Arm.CHALLENGER: self.env_urls[Arm.CHALLENGER] if cfg.challenger_url is None else cfg.challenger_url}
        return {arm: url.rstrip("/") for arm, url in urls.items() if url}

    def apply(self, cfg: RouterConfig) -> None:
        """Point each arm's client at its URL. A replaced client keeps serving the requests it has in
        flight and is closed once they are done (after the longest timeout). Call it in the server's event
        loop once started (it schedules the new client's discovery there), never from a worker thread."""
        wanted = self.urls(cfg)
        linger_s = max(cfg.champion_timeout_ms, cfg.challenger_timeout_ms, cfg.shadow_timeout_ms) / 1000 + 1
        for arm in (Arm.CHAMPION, Arm.CHALLENGER):
            current = self.clients.get(arm)
            url = wanted.get(arm)
            if (current.url if current is not None else None) == url:
                continue
            if url is None:
                log.info("%s arm removed (was %s)", arm, current.url if current else None)
                del self.clients[arm]
            else:
                self.clients[arm] = ArmClient(arm, url, self.metrics, connector=make_connector(url), token=self.token)
                if current is not None:
                    log.info("%s arm moves from %s to %s", arm, current.url, url)
                if self._started:
                    self._spawn(self._discover(arm))
            if current is not None:
                self._retired.add(current)
                if self._started:
                    self._spawn(self._close_later(current, linger_s))

    def start(self) -> None:
        """In the server's event loop: discover every arm."""
        self._started = True
        for arm in list(self.clients):
            self._spawn(self._discover(arm))

    async def aclose(self) -> None:
        for task in list(self._background):
            task.cancel()
        for client in [*self.clients.values(), *self._retired]:
            await client.aclose()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _close_later(self, client: ArmClient, linger_s: float) -> None:
        await asyncio.sleep(linger_s)
        self._retired.discard(client)
        await client.aclose()

    async def _discover(self, arm: Arm) -> None:
        """Fetch an arm's /info until it answers (arms may start after the router)."""
        delay = 0.2
        client = self.clients.get(arm)
        while client is not None and self.clients.get(arm) is client:
            try:
                info = await client.fetch_info()
            except (ArmFailure, ArmRejected, ValueError) as exc:
                if isinstance(exc, ArmFailure) and exc.reason == "auth_error":
                    rate_limited(f"discover-{arm}", "the %s arm at %s refuses the Router: %s", arm, client.url,
                                 exc, level=logging.WARNING)
                log.debug("waiting for the %s arm at %s: %s", arm, client.url, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if self.clients.get(arm) is client:
                self._adopt(arm, info)
            return

    def _adopt(self, arm: Arm, info: ModelInfo) -> None:
        log.info("%s arm at %s: %s version %s, %d features", arm, self.clients[arm].url, info.model_name,
                 info.model_version, len(info.features))
        if arm is Arm.CHAMPION:
            self.schema = FeatureSchema(tuple(info.features), tuple(info.feature_types))
        champion = self.clients[Arm.CHAMPION].info
        challenger = self.clients[Arm.CHALLENGER].info if Arm.CHALLENGER in self.clients else None
        if champion and challenger and set(champion.features) != set(challenger.features):
            log.error("the challenger's signature differs from the champion's (%s vs %s): challenger-routed "
                      "requests will fall back to the champion", challenger.features, champion.features)

    def _check_version(self, arm: Arm, version: str) -> None:
        """An arm answering with a new version was re-pointed: re-read its signature in the background."""
        client = self.clients.get(arm)
        info = client.info if client is not None else None
        if info is not None and info.model_version != version and arm not in self._refreshing:
            self._refreshing.add(arm)

            async def refresh() -> None:
                try:
                    await self._discover(arm)
                finally:
                    self._refreshing.discard(arm)

            self._spawn(refresh())

    async def score(self, arm: Arm, features: Sequence[Mapping[str, Any]], request_ids: Sequence[str],
                    timeout_ms: float, *, single: bool, breaker: bool = True) -> list[ArmAnswer]:
        """`ArmClient.score` on ``arm``; `ArmFailure` when the arm is not configured (removed meanwhile)."""
        client = self.clients.get(arm)
        if client is None:
            raise ArmFailure(arm, "connect_error", "arm removed from the configuration")
        answers = await client.score(features, request_ids, timeout_ms, single=single, breaker=breaker)
        self._check_version(arm, answers[0].model_version)
        return answers

    def describe(self) -> dict[str, Any]:
        """Each arm's circuit and model (name, version, alias and the features a request must carry; None before
        it has answered), for ``/routing``: what a client may know, not where the arms are."""
        return {arm.value: {"circuit_open": c.breaker.is_open,
                            "model": c.info.model_dump(include={"model_name", "model_version", "alias", "features",
                                                                "feature_types"})
                            if c.info else None}
                for arm, c in self.clients.items()}
