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

from bentos.auth import AuthResult, Guard, GuardMiddleware, GuardSlot, OutgoingToken, TokenStore, parse_token_lines
from bentos.edge import NOT_FOUND_PATH, Routes


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
    store = TokenStore((), path, reread_s=5.0, clock=clock)
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
    inner: Any = Starlette(routes=[Route("/feedback", echo, methods=["POST"]), Route("/score", echo, methods=["POST", "GET"]),
                                   Route("/arrow", echo, methods=["POST"]), Route("/metrics", echo, methods=["GET"])])
    routes = Routes(json=frozenset({"/feedback", "/score"}), raw=frozenset({"/arrow"}), static=frozenset())
    return GuardMiddleware(inner, slot=slot, routes=routes)


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
        r = await c.get("/score")  # the endpoints take POST: a JSON 405, not BentoML's plain text
        assert r.status_code == 405 and r.json()["code"] == "method_not_allowed" and r.headers["allow"] == "POST"
        r = await c.get("/metrics")  # BentoML's own pages pass
        assert r.status_code == 200
        r = await c.request("TRACE", "/metrics")  # ... with GET
        assert r.status_code == 405 and r.json()["code"] == "method_not_allowed" and r.headers["allow"] == "GET, HEAD"
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


@pytest.mark.anyio
@pytest.mark.parametrize("content_type", ["multipart/form-data", "application/x-www-form-urlencoded", "text/plain",
                                          "application/vnd.bentoml+pickle", "application/xml"])
async def test_json_endpoints_refuse_other_media_types(content_type: str) -> None:
    """Multipart without a boundary was a 500 on every JSON endpoint, a form body was echoed in a 400."""
    guard = Guard(protected={}, max_body_bytes=1000)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_with(guard)), base_url="http://t") as c:
        r = await c.post("/score", content=b"secret=hunter2", headers={"Content-Type": content_type})
        assert r.status_code == 415 and r.json() == {
            "code": "unsupported_media_type", "error": "send the body as JSON with Content-Type: application/json"}
        for ok in ("application/json", "application/json; charset=utf-8", "application/merge-patch+json"):
            assert (await c.post("/score", content=b"{}", headers={"Content-Type": ok})).status_code == 200
        assert (await c.post("/score", content=b"{}")).status_code == 200  # none: JSON is assumed
        r = await c.post("/arrow", content=b"x", headers={"Content-Type": content_type})
        assert r.status_code == 200  # a raw endpoint checks its own media types


@pytest.mark.anyio
async def test_unknown_paths_get_a_json_404() -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_with(Guard({}, 100))), base_url="http://t") as c:
        r = await c.post(NOT_FOUND_PATH, json={})
        assert r.status_code == 404 and r.json()["code"] == "not_found"


def test_a_store_accepts_the_tokens_of_several_files(tmp_path: Path) -> None:
    (tmp_path / "scoring").write_text("client-token\n")
    (tmp_path / "arm").write_text("# the Router's own\nrouter-token\n")
    store = TokenStore(["env-token"], tmp_path / "scoring", None, tmp_path / "arm")
    for token in ("env-token", "client-token", "router-token"):
        assert store.check(f"Bearer {token}") is AuthResult.OK
    assert store.check("Bearer # the Router's own") is AuthResult.INVALID


def test_outgoing_token_is_the_first_one_and_follows_its_file(tmp_path: Path) -> None:
    assert OutgoingToken(["a", "b"]).headers() == {"Authorization": "Bearer a"}
    assert OutgoingToken().headers() == {}
    path = tmp_path / "arm"
    path.write_text("first\nsecond\n")
    clock = Clock()
    token = OutgoingToken((), path, reread_s=5.0, clock=clock)
    assert token.headers() == {"Authorization": "Bearer first"}
    path.write_text("rotated\nfirst\n")
    os.utime(path, ns=(1, 10**9))
    clock.t = 6
    assert token.headers() == {"Authorization": "Bearer rotated"}
