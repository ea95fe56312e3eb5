"""Refusals become HTTP answers in one place (`bentos.answers`); the services' ASGI tests check the answers
end to end (400/413 naming fields, 503 with Retry-After, an arm's own 4xx passed through)."""

from __future__ import annotations

import inspect
import json

import pytest

from bentos.answers import RETRY_AFTER_S, Refusal, Unavailable, answers_refusals, error_response
from bentos.validation import InvalidRequest, Problem

pytestmark = pytest.mark.anyio


def test_invalid_input_is_a_400_or_413_naming_the_field() -> None:
    bad = InvalidRequest([Problem(("features", "V3"), "must be a finite number, got nan", "finite_number")])
    r = error_response(None, bad, {"X-Request-ID": "tx-1"})
    assert r.status_code == 400 and r.headers["x-request-id"] == "tx-1"
    assert json.loads(r.body)["detail"] == [{"loc": ["features", "V3"], "msg": "must be a finite number, got nan",
                                             "type": "finite_number"}]
    big = InvalidRequest([Problem(("rows",), "too many", "too_long")], status=413)
    assert error_response(None, big).status_code == 413


def test_unavailable_is_a_503_with_retry_after() -> None:
    exc = Unavailable("timeout", "the champion cannot answer", "tx-2", retry_after_s=RETRY_AFTER_S)
    r = error_response(None, exc, {"X-Request-ID": "tx-2"})
    assert r.status_code == 503 and r.headers["retry-after"] == str(RETRY_AFTER_S)
    assert r.headers["x-request-id"] == "tx-2" and exc.reason == "timeout"
    assert json.loads(r.body) == {"error": "the champion cannot answer", "request_id": "tx-2",
                                  "retry_after_s": RETRY_AFTER_S}


def test_a_refusal_keeps_its_status_and_body() -> None:
    r = error_response(None, Refusal(422, {"error": "no", "detail": [1]}))
    assert r.status_code == 422 and json.loads(r.body) == {"error": "no", "detail": [1]}
    assert str(Refusal(418, {"x": 1})) == "HTTP 418"


async def test_the_wrapper_keeps_the_endpoint_signature_and_lets_other_errors_through() -> None:
    async def endpoint(self: object, request: dict[str, int], /, ctx: object = None) -> int:
        if request["n"] == 0:
            raise InvalidRequest([Problem(("n",), "must not be 0", "value")])
        if request["n"] < 0:
            raise RuntimeError("a bug")
        return request["n"]

    wrapped = answers_refusals(endpoint)
    assert inspect.signature(wrapped) == inspect.signature(endpoint)  # BentoML reads the request type and ctx
    assert await wrapped(None, {"n": 3}) == 3
    refused = await wrapped(None, {"n": 0})
    assert getattr(refused, "status_code", None) == 400
    with pytest.raises(RuntimeError, match="a bug"):
        await wrapped(None, {"n": -1})
