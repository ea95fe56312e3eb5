"""The one place where a refused request becomes an HTTP answer, for the Scorer and the Router.

Endpoints and the engines behind them raise; `answers_refusals` turns what they raise into the
response. BentoML's own exceptions cannot do this: they answer ``{"error": ...}`` with a status but no
headers and no body of our shape, so a 503 could not say ``Retry-After`` and a 400 could not list the
fields at fault. A returned Starlette response is passed through by BentoML as it is; the status and
headers are also set on the request context, which BentoML copies onto the response (so headers set on
the context before the failure, such as ``X-Request-ID``, are kept).

- `InvalidRequest` (bad input, `bentos.validation`): 400, or 413 for an oversized batch, naming fields;
- `Refusal`: any other status and body, e.g. an arm's own 4xx answer passed through by the Router;
- `Unavailable`: 503 with ``Retry-After`` (not ready yet, the champion cannot answer).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ParamSpec, TypeVar

import bentoml
from starlette.responses import JSONResponse

from bentos.validation import InvalidRequest

RETRY_AFTER_S = 1

P = ParamSpec("P")
R = TypeVar("R")


class Refusal(Exception):
    """A request answered with ``status`` and ``body`` (and ``headers``) instead of a result."""

    def __init__(self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None):
        super().__init__(str(body.get("error", f"HTTP {status}")))
        self.status = status
        self.body = dict(body)
        self.headers = dict(headers or {})


class Unavailable(Refusal):
    """The service cannot answer now; the client should retry after `RETRY_AFTER_S`. ``reason`` is counted."""

    def __init__(self, reason: str, error: str, request_id: str | None, **extra: Any):
        super().__init__(503, {"error": error, "request_id": request_id, **extra},
                         {"Retry-After": str(RETRY_AFTER_S)})
        self.reason = reason


def error_response(ctx: bentoml.Context | None, exc: InvalidRequest | Refusal,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The answer to ``exc`` (with ``headers`` besides its own); set on ``ctx`` too when there is one."""
    if isinstance(exc, InvalidRequest):
        status, body, own = exc.status, exc.body(), {}
    else:
        status, body, own = exc.status, exc.body, exc.headers
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
