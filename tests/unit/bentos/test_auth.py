"""Bearer tokens and body limits, checked before a service reads the body."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bentos.auth import AuthResult, Guard, GuardMiddleware, GuardSlot, TokenStore, parse_token_lines


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_token_lines() -> None:
    assert parse_token_lines("# rotated 2026-11\n a \n\nb\n#c\n") == ["a", "b"]


def test_static_tokens() -> None:
    store = TokenStore(["alpha", "beta"])
    assert store.check("Bearer alpha") is AuthResult.OK
    assert store.check("bearer beta") is AuthResult.OK
    assert store.check("Bearer gamma") is AuthResult.INVALID
    assert store.check(None) is AuthResult.MISSING
    assert store.check("Basic YWxwaGE=") is AuthResult.MISSING
    assert store.check("Bearer ") is AuthResult.MISSING
    assert TokenStore([]).check("Bearer alpha") is AuthResult.NOT_CONFIGURED


def test_token_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("old\n")
    clock = Clock()
    store = TokenStore(file=path, reread_s=5.0, clock=clock)
    assert store.check("Bearer old") is AuthResult.OK
    path.write_text("new-token\n")
    os.utime(path, ns=(1, 10**9))
    assert store.check("Bearer new-token") is AuthResult.INVALID  # not re-read yet
    clock.t = 6
    assert store.check("Bearer new-token") is AuthResult.OK
    assert store.check("Bearer old") is AuthResult.INVALID
    path.unlink()
    clock.t = 12
    assert store.check("Bearer new-token") is AuthResult.NOT_CONFIGURED


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"bytes": len(body)})


def app_with(guard: Guard | None) -> GuardMiddleware:
    slot = GuardSlot()
    slot.guard = guard
    inner: Any = Starlette(routes=[Route("/feedback", echo, methods=["POST"]), Route("/score", echo, methods=["POST", "GET"])])
    return GuardMiddleware(inner, slot=slot)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_middleware_answers_before_the_app() -> None:
    denied: list[tuple[str, AuthResult]] = []
    guard = Guard(protected={"/feedback": TokenStore(["t0k"])}, max_body_bytes=100,
                  on_denied=lambda p, r: denied.append((p, r)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_with(guard)), base_url="http://t") as c:
        r = await c.post("/feedback", json={"x": 1})
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert "missing bearer token" in r.json()["error"]
        r = await c.post("/feedback", json={}, headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401 and "invalid" in r.json()["error"]
        r = await c.post("/feedback", json={}, headers={"Authorization": "Bearer t0k"})
        assert r.status_code == 200
        r = await c.post("/score", content=b"x" * 50)  # unprotected path
        assert r.status_code == 200 and r.json() == {"bytes": 50}
        r = await c.post("/score", content=b"x" * 101)
        assert r.status_code == 413 and "limit of 100" in r.json()["error"]

        async def chunks():  # no Content-Length: counted while streaming
            for _ in range(5):
                yield b"y" * 30

        r = await c.post("/score", content=chunks())
        assert r.status_code == 413
        r = await c.get("/score")
        assert r.status_code == 200
    assert denied == [("/feedback", AuthResult.MISSING), ("/feedback", AuthResult.INVALID)]


@pytest.mark.anyio
async def test_small_chunked_body_is_replayed() -> None:
    guard = Guard(protected={}, max_body_bytes=1000)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_with(guard)), base_url="http://t") as c:
        async def chunks():
            for _ in range(3):
                yield b"z" * 10

        r = await c.post("/score", content=chunks())
        assert r.status_code == 200 and r.json() == {"bytes": 30}


@pytest.mark.anyio
async def test_fails_closed_without_tokens_or_guard() -> None:
    guard = Guard(protected={"/feedback": TokenStore([])}, max_body_bytes=100)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_with(guard)), base_url="http://t") as c:
        r = await c.post("/feedback", json={}, headers={"Authorization": "Bearer anything"})
        assert r.status_code == 503 and "no tokens are configured" in r.json()["error"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_with(None)), base_url="http://t") as c:
        r = await c.post("/score", json={})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
