"""The one place where a refused request becomes an HTTP answer, for the Scorer and the Router.

Endpoints and the engines behind them raise; `answers_refusals` turns what they raise into the
response. BentoML's own exceptions cannot do this: they answer ``{"error": ...}`` with a status but no
headers and no body of our shape, so a 503 could not say ``Retry-After`` and a 400 could not list the
fields at fault. A returned Starlette response is passed through by BentoML as it is; the status and
headers are also set on the request context, which BentoML copies onto the response (so headers set on
the context before the failure, such as ``X-Request-ID``, are kept).

Every error body has the same shape: ``{"code": <ErrorCode>, "error": <message>, ...}`` — a stable code to
branch on, a message for people, and for invalid input ``detail`` naming each field. Messages never carry
internals (upstream hosts, exception texts, paths): those go to the log, where client errors are one INFO
line, rate-limited (`RateLimitedLog`), never a traceback.

- `InvalidRequest` (bad input, `bentos.validation`): 400, or 413 for an oversized batch, naming fields;
- `Refusal`: any other status and body, e.g. an arm's own 4xx answer passed through by the Router;
- `Unavailable`: 503 with ``Retry-After`` (not ready yet, the champion cannot answer).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ParamSpec, TypeVar

import bentoml
from starlette.responses import JSONResponse

from bentos.messages import ErrorCode
from bentos.validation import InvalidRequest

RETRY_AFTER_S = 1

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger(__name__)


def error_body(code: ErrorCode, message: str, **extra: Any) -> dict[str, Any]:
    """The body of every error answer (see the module docstring)."""
    return {"code": code.value, "error": message, **extra}


class Refusal(Exception):
    """A request answered with ``status`` and ``body`` (and ``headers``) instead of a result."""

    def __init__(self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None):
        super().__init__(str(body.get("error", f"HTTP {status}")))
        self.status = status
        self.body = dict(body)
        self.headers = dict(headers or {})


class Unavailable(Refusal):
    """The service cannot answer now; the client should retry after `RETRY_AFTER_S`. ``reason`` is what is
    counted and logged (e.g. the upstream failure: timeout, connect_error); ``code`` is what the client sees."""

    def __init__(self, code: ErrorCode, message: str, request_id: str | None, *, reason: str):
        super().__init__(503, error_body(code, message, request_id=request_id), {"Retry-After": str(RETRY_AFTER_S)})
        self.reason = reason


class RateLimitedLog:
    """At most one log line per ``key`` (e.g. a refusal's status) every ``interval_s``; the lines skipped
    meanwhile are counted in the next one. A fuzzing client cannot grow the log faster than a few lines a second."""

    def __init__(self, logger: logging.Logger, interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self._log = logger
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def __call__(self, key: str, message: str, *args: object, level: int = logging.INFO) -> bool:
        """Log ``message % args`` unless a line of ``key`` was logged within the interval. True if logged."""
        now = self._clock()
        with self._lock:
            if now - self._last.get(key, -self._interval_s) < self._interval_s:
                self._skipped[key] = self._skipped.get(key, 0) + 1
                return False
            self._last[key] = now
            skipped = self._skipped.pop(key, 0)
        if skipped:
            message += f" ({skipped} more like it in the last {self._interval_s:.0f}s not logged)"
        self._log.log(level, message, *args)
        return True


rate_limited = RateLimitedLog(log)


def error_response(ctx: bentoml.Context | None, exc: InvalidRequest | Refusal,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The answer to ``exc`` (with ``headers`` besides its own); set on ``ctx`` too when there is one.
    A client error (4xx) is logged as one rate-limited line."""
    if isinstance(exc, InvalidRequest):
        status, body, own = exc.status, exc.body(), {}
    else:
        status, body, own = exc.status, exc.body, exc.headers
    if status < 500:
        rate_limited(f"{status}", "refused with %d %s: %s", status, body.get("code"), str(exc)[:300])
    all_headers = {**(headers or {}), **own}
    if ctx is not None:  # BentoML copies the context's status and headers onto a returned response
        ctx.response.status_code = status
        for key, value in all_headers.items():
            ctx.response.headers[key] = value
    return JSONResponse(body, status_code=status, headers=all_headers)


def answers_refusals(endpoint: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Wrap an async ``@bentoml.api`` endpoint that takes a ``bentoml.Context`` so that what it raises
    (`InvalidRequest`, `Refusal`) is answered by `error_response`. Put it under ``@bentoml.api``."""

    @functools.wraps(endpoint)
    async def answered(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await endpoint(*args, **kwargs)
        except (InvalidRequest, Refusal) as exc:
            # BentoML passes the context as a keyword and then copies its status onto the response
            ctx = next((v for v in kwargs.values() if isinstance(v, bentoml.Context)), None)
            response = error_response(ctx, exc)
            return response  # type: ignore[return-value]  # BentoML sends a returned Response as it is

    return answered
