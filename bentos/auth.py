"""Bearer-token authentication and request-size limits, applied before a body is read.

Labels decide promotions, so ``/feedback`` always needs a token; scoring needs one only when scoring
tokens are configured. Tokens come from an environment variable and/or a file (a mounted Kubernetes
Secret: one token per line, ``#`` comments), and the file is re-read when it changes, so a rotated
Secret takes effect without a restart. Comparison is constant-time on SHA-256 digests.

`GuardMiddleware` is an ASGI middleware: it answers 401 (missing/invalid token), 503 (no tokens
configured for a protected path: fail closed) or 413 (body too large) before the service parses
anything. The service owns the `Guard`; the middleware reaches it through a `GuardSlot`, because
BentoML builds the middleware stack before the service instance exists.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class AuthResult(StrEnum):
    OK = "ok"
    MISSING = "missing"          # no Authorization: Bearer header
    INVALID = "invalid"          # a token that is not accepted
    NOT_CONFIGURED = "not_configured"  # no tokens at all: the endpoint is closed


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_token_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


class TokenStore:
    """Accepted tokens from ``tokens`` plus ``file`` (re-read at most every ``reread_s`` when changed)."""

    def __init__(self, tokens: Iterable[str] = (), file: Path | None = None, *, reread_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        self._static = {_digest(t) for t in tokens if t}
        self._file = file
        self._reread_s = reread_s
        self._clock = clock
        self._file_digests: set[bytes] = set()
        self._file_sig: tuple[int, int, int] | None = None
        self._next_check = 0.0
        self._refresh()

    def _refresh(self) -> None:
        self._next_check = self._clock() + self._reread_s
        if self._file is None:
            return
        try:
            st = os.stat(self._file)
        except OSError:
            if self._file_sig is not None or not self._file_digests:
                log.warning("token file %s is missing: its tokens are not accepted", self._file)
            self._file_sig, self._file_digests = None, set()
            return
        sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        if sig == self._file_sig:
            return
        try:
            self._file_digests = {_digest(t) for t in parse_token_lines(self._file.read_text())}
            self._file_sig = sig
        except OSError as exc:
            log.warning("cannot read token file %s: %s", self._file, exc)

    @property
    def configured(self) -> bool:
        if self._clock() >= self._next_check:
            self._refresh()
        return bool(self._static or self._file_digests)

    def check(self, authorization: str | None) -> AuthResult:
        if not self.configured:
            return AuthResult.NOT_CONFIGURED
        if not authorization:
            return AuthResult.MISSING
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return AuthResult.MISSING
        given = _digest(token.strip())
        ok = False
        for accepted in (*self._static, *self._file_digests):
            ok |= hmac.compare_digest(given, accepted)
        return AuthResult.OK if ok else AuthResult.INVALID


@dataclass
class Guard:
    """What one service requires: paths -> token store (None = open), and the body size limit."""

    protected: Mapping[str, TokenStore]
    max_body_bytes: int
    on_denied: Callable[[str, AuthResult], None] | None = None


class GuardSlot:
    """Where a service puts its `Guard` once it exists (the middleware is built earlier)."""

    def __init__(self) -> None:
        self.guard: Guard | None = None


async def _send_json(send: Send, status: int, body: Mapping[str, Any], headers: Mapping[str, str] = {}) -> None:
    payload = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


class GuardMiddleware:
    """ASGI middleware enforcing a `Guard`: tokens on protected paths, and a body size limit."""

    def __init__(self, app: ASGIApp, slot: GuardSlot):
        self.app = app
        self.slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        guard = self.slot.guard
        path = scope.get("path", "")
        if guard is None:
            await _send_json(send, 503, {"error": "service is starting"}, {"Retry-After": "1"})
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        store = guard.protected.get(path)
        if store is not None:
            result = store.check(headers.get("authorization"))
            if result is not AuthResult.OK:
                if guard.on_denied:
                    guard.on_denied(path, result)
                if result is AuthResult.NOT_CONFIGURED:
                    await _send_json(send, 503, {"error": f"{path} is disabled: no tokens are configured"})
                else:
                    msg = "missing bearer token" if result is AuthResult.MISSING else "invalid bearer token"
                    await _send_json(send, 401, {"error": f"{path}: {msg}"}, {"WWW-Authenticate": 'Bearer realm="kingmaker"'})
                return
        limit = guard.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                await _send_json(send, 400, {"error": "invalid Content-Length header"})
                return
            if too_big:
                await _send_json(send, 413, {"error": f"request body of {declared} bytes exceeds the limit of {limit}"})
                return
            await self.app(scope, receive, send)
            return
        # No Content-Length (chunked): read up to the limit here, then replay the body to the app.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _send_json(send, 413, {"error": f"request body exceeds the limit of {limit} bytes"})
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields ``body`` once, then defers to the real one (for disconnects)."""
    sent = False

    async def wrapped() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        message: Message = await receive()
        return message

    return wrapped


def protect(service: object, slot: GuardSlot) -> None:
    """Put a `GuardMiddleware` reading ``slot`` in front of a ``@bentoml.service`` class.

    The decorator turns the class into a `bentoml.Service`, which a type checker cannot see through a
    class decorator; the check here makes that explicit instead of silencing it.
    """
    import bentoml

    if not isinstance(service, bentoml.Service):
        raise TypeError(f"{service!r} is not a bentoml service")
    service.add_asgi_middleware(GuardMiddleware, slot=slot)
