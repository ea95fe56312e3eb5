"""Bearer-token authentication and request-size limits, applied before a body is read.

Labels decide promotions, so ``/feedback`` always needs a token; scoring needs one only when scoring
tokens are configured. Tokens come from an environment variable and/or a file (a mounted Kubernetes
Secret: one token per line, ``#`` comments), and the file is re-read when it changes, so a rotated
Secret takes effect without a restart. Comparison is constant-time on SHA-256 digests.

`GuardMiddleware` is an ASGI middleware: it answers 404 (unknown path), 405 (not POST), 401
(missing/invalid token), 503 (no tokens configured for a protected path: fail closed), 415 (a JSON
endpoint sent something else) or 413 (body too large) before the service parses anything. The service
owns the `Guard`; the middleware reaches it through a `GuardSlot`, because BentoML builds the middleware
stack before the service instance exists. `OutgoingToken` is the other direction: the token the Router
sends to its arms.
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

from bentos.answers import error_body
from bentos.edge import NOT_FOUND_PATH, Routes
from bentos.messages import ErrorCode

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


class TokenFile:
    """The tokens of one file, one per line, re-read at most every ``reread_s`` when it changed (inode, size,
    mtime: a rotated Kubernetes Secret is a new file)."""

    def __init__(self, path: Path, *, reread_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.path = path
        self._reread_s = reread_s
        self._clock = clock
        self.tokens: list[str] = []
        self._sig: tuple[int, int, int] | None = None
        self._next_check = 0.0
        self._refresh()

    def current(self) -> list[str]:
        if self._clock() >= self._next_check:
            self._refresh()
        return self.tokens

    def _refresh(self) -> None:
        self._next_check = self._clock() + self._reread_s
        try:
            st = os.stat(self.path)
        except OSError:
            if self._sig is not None or not self.tokens:
                log.warning("token file %s is missing: its tokens are not used", self.path)
            self._sig, self.tokens = None, []
            return
        sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        if sig == self._sig:
            return
        try:
            self.tokens = parse_token_lines(self.path.read_text())
            self._sig = sig
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("cannot read token file %s: %s", self.path, exc)


class TokenStore:
    """Accepted tokens from ``tokens`` plus the lines of ``files`` (each a `TokenFile`)."""

    def __init__(self, tokens: Iterable[str] = (), *files: Path | None, reread_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        self._static = {_digest(t) for t in tokens if t}
        self._files = [TokenFile(f, reread_s=reread_s, clock=clock) for f in files if f is not None]
        self._file_tokens: tuple[list[str], ...] = ()
        self._accepted = self._static

    def _digests(self) -> set[bytes]:
        current = tuple(f.current() for f in self._files)
        if current != self._file_tokens:
            self._file_tokens = current
            self._accepted = self._static | {_digest(t) for tokens in current for t in tokens}
        return self._accepted

    @property
    def configured(self) -> bool:
        return bool(self._digests())

    def check(self, authorization: str | None) -> AuthResult:
        accepted_digests = self._digests()
        if not accepted_digests:
            return AuthResult.NOT_CONFIGURED
        if not authorization:
            return AuthResult.MISSING
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return AuthResult.MISSING
        given = _digest(token.strip())
        ok = False
        for accepted in accepted_digests:
            ok |= hmac.compare_digest(given, accepted)
        return AuthResult.OK if ok else AuthResult.INVALID


class OutgoingToken:
    """The bearer token a service sends to another (the Router to its arms): the first of ``tokens``, else the
    first line of ``file`` (re-read when it changes, so a rotation needs no restart); None when neither has one."""

    def __init__(self, tokens: Iterable[str] = (), file: Path | None = None, **file_options: Any):
        self._static = next((t for t in tokens if t), None)
        self._file = TokenFile(file, **file_options) if file is not None and self._static is None else None

    def headers(self) -> dict[str, str]:
        """``{"Authorization": "Bearer <token>"}``, or no header without a token."""
        token = self._static
        if token is None and self._file is not None:
            token = next(iter(self._file.current()), None)
        return {"Authorization": f"Bearer {token}"} if token else {}


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


def json_media_type(content_type: str | None) -> bool:
    """Is a Content-Type one the JSON endpoints read? None (absent: JSON is assumed), application/json or a
    ``+json`` type. Everything else (form data, multipart, pickle, text) is refused with 415 before BentoML
    tries to parse it: multipart without a boundary used to be a 500, a form body was echoed in a 400."""
    if content_type is None:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("", "application/json") or (media.startswith("application/") and media.endswith("+json"))


class GuardMiddleware:
    """ASGI middleware in front of a service's endpoints (see the module docstring): unknown paths (sent on as
    `bentos.edge.NOT_FOUND_PATH`) get a JSON 404, endpoints other methods than POST a 405, then protected
    paths need a token, JSON endpoints a JSON media type (415) and every body fits the size limit (413)."""

    def __init__(self, app: ASGIApp, slot: GuardSlot, routes: Routes):
        self.app = app
        self.slot = slot
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope.get("path", ""), scope.get("method")
        if path == NOT_FOUND_PATH:
            await _send_json(send, 404, error_body(ErrorCode.NOT_FOUND, "no such path"))
            return
        if path not in self.routes.posts:  # BentoML's pages: /metrics, /readyz, /docs.json ...
            if method in ("GET", "HEAD"):
                await self.app(scope, receive, send)
            else:
                await _send_json(send, 405, error_body(ErrorCode.METHOD_NOT_ALLOWED, f"{path} takes GET"),
                                 {"Allow": "GET, HEAD"})
            return
        if method != "POST":
            await _send_json(send, 405, error_body(ErrorCode.METHOD_NOT_ALLOWED, f"{path} takes POST"),
                             {"Allow": "POST"})
            return
        guard = self.slot.guard
        if guard is None:
            await _send_json(send, 503, error_body(ErrorCode.NOT_READY, "service is starting"), {"Retry-After": "1"})
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        store = guard.protected.get(path)
        if store is not None:
            result = store.check(headers.get("authorization"))
            if result is not AuthResult.OK:
                if guard.on_denied:
                    guard.on_denied(path, result)
                if result is AuthResult.NOT_CONFIGURED:
                    await _send_json(send, 503, error_body(ErrorCode.DISABLED,
                                                           f"{path} is disabled: no tokens are configured"))
                else:
                    msg = "missing bearer token" if result is AuthResult.MISSING else "invalid bearer token"
                    await _send_json(send, 401, error_body(ErrorCode.UNAUTHORIZED, f"{path}: {msg}"),
                                     {"WWW-Authenticate": 'Bearer realm="kingmaker"'})
                return
        if path in self.routes.json and not json_media_type(headers.get("content-type")):
            await _send_json(send, 415, error_body(ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                                                   "send the body as JSON with Content-Type: application/json"))
            return
        limit = guard.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                await _send_json(send, 400, error_body(ErrorCode.INVALID_REQUEST, "invalid Content-Length header"))
                return
            if too_big:
                await _send_json(send, 413, error_body(ErrorCode.TOO_LARGE,
                                                       f"request body of {declared} bytes exceeds the limit of {limit}"))
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
                await _send_json(send, 413, error_body(ErrorCode.TOO_LARGE,
                                                       f"request body exceeds the limit of {limit} bytes"))
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
    service.add_asgi_middleware(GuardMiddleware, slot=slot, routes=Routes.of(service))
