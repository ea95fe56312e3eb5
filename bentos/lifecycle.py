"""Graceful stop: on SIGTERM a service reports not-ready first, then the server drains and exits.

Uvicorn (under ``bentoml serve``) already stops accepting connections on SIGTERM, lets in-flight
requests finish and then runs the shutdown hooks (where the Router flushes its log). `Drain` chains
onto the server's own handler so that ``/readyz`` turns false at the signal, optionally
``delay_s`` before the server starts stopping (for deployments without a preStop hook).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)


def fix_bentoml_request_timers() -> bool:
    """Make BentoML's per-request timeout timer go away when the request ends.

    bentoml 1.4's ``TimeoutMiddleware`` schedules ``loop.call_later(timeout, ...)`` for every request
    and never cancels it, so each request's context (its OpenTelemetry span, futures, ~15 objects) lives
    for the whole ``traffic.timeout`` (60 s by default). At 1,000 req/s that is ~10^6 live objects and
    full garbage collections of 300-500 ms: the p99 latency spikes we measured. This wraps the
    middleware's ``__call__`` so the timer is cancelled once the response is done; behaviour is otherwise
    unchanged. Returns False (and changes nothing) if the middleware no longer looks as expected.
    """
    try:
        from bentoml._internal.server.http import traffic
    except ImportError:
        return False
    cls = getattr(traffic, "TimeoutMiddleware", None)
    if cls is None or getattr(cls, "_kingmaker_fixed", False):
        return cls is not None
    if not hasattr(cls, "_set_timer_out"):
        log.warning("bentoml's TimeoutMiddleware changed; request timers are left as they are")
        return False
    from starlette.responses import JSONResponse

    async def __call__(self: Any, scope: Any, receive: Any, send: Any) -> None:
        # bentoml 1.4.40's TimeoutMiddleware.__call__, plus cancelling the timer at the end.
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

        async def _send(message: Any) -> None:
            if not waiter.done():
                waiter.set_result(None)
            await send(message)

        fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
        try:
            try:
                await waiter
            except TimeoutError:
                if fut.cancel():
                    resp = JSONResponse({"error": f"Not able to process the request in {self.timeout} seconds"},
                                        status_code=504)
                    await resp(scope, receive, send)
            else:
                await fut
        finally:
            timer.cancel()

    cls.__call__ = __call__
    cls._kingmaker_fixed = True
    return True


def settle_heap() -> None:
    """Move everything allocated during start-up (libraries, the model) out of the garbage collector's
    view: later full collections then scan only request-time objects, which keeps them short (they
    otherwise show up as 10-50 ms latency spikes)."""
    gc.collect()
    gc.freeze()


def show_info_logs() -> None:
    """Let this package's INFO lines through under ``bentoml serve``, whose logging passes only warnings from
    loggers other than its own. They are rare events worth reading afterwards: an arm re-pointed or
    discovered, a config reloaded, a model loaded, the prediction log flushed at shutdown."""
    logger = logging.getLogger(__name__.partition(".")[0])
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


class Drain:
    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.draining = False

    def install(self) -> bool:
        """Chain onto the running server's SIGTERM/SIGINT handlers. False when there are none (tests)."""
        if threading.current_thread() is not threading.main_thread():
            return False
        loop = asyncio.get_running_loop()
        installed = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)
            if not callable(previous):
                continue
            signal.signal(sig, self._handler(previous, loop))
            installed = True
        return installed

    def _handler(self, previous: Any, loop: asyncio.AbstractEventLoop) -> Any:
        def handler(signum: int, frame: FrameType | None) -> None:
            first = not self.draining
            self.draining = True
            if first and self.delay_s > 0:
                log.info("signal %d: not ready; stopping in %.1fs", signum, self.delay_s)
                loop.call_soon_threadsafe(loop.call_later, self.delay_s, previous, signum, frame)
            else:
                previous(signum, frame)

        return handler
