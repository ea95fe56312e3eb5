"""Refusals become HTTP answers in one place (`bentos.answers`); the services' ASGI tests check the answers
end to end (400/413 naming fields, 503 with Retry-After, an arm's own 4xx passed through)."""

from __future__ import annotations

import inspect
import json
import logging

import pytest

from bentos.answers import RETRY_AFTER_S, RateLimitedLog, Refusal, Unavailable, answers_refusals, error_response
from bentos.messages import ErrorCode
from bentos.validation import InvalidRequest, Problem

pytestmark = pytest.mark.anyio


def test_invalid_input_is_a_400_or_413_naming_the_field() -> None:
    bad = InvalidRequest([Problem(("features", "V3"), "must be a finite number, got nan", "finite_number")])
    r = error_response(None, bad, {"X-Request-ID": "tx-1"})
    assert r.status_code == 400 and r.headers["x-request-id"] == "tx-1"
    body = json.loads(r.body)
    assert body["code"] == "invalid_request" and body["error"] == "invalid request: features.V3: must be a finite " \
        "number, got nan"
    assert body["detail"] == [{"loc": ["features", "V3"], "msg": "must be a finite number, got nan",
                               "type": "finite_number"}]
    big = InvalidRequest([Problem(("rows",), "too many", "too_long")], status=413)
    assert error_response(None, big).status_code == 413
    assert json.loads(error_response(None, big).body)["code"] == "too_large"


def test_unavailable_is_a_503_with_retry_after_and_a_stable_code() -> None:
    exc = Unavailable(ErrorCode.CHAMPION_UNAVAILABLE, "the champion cannot answer", "tx-2", reason="timeout")
    r = error_response(None, exc, {"X-Request-ID": "tx-2"})
    assert r.status_code == 503 and r.headers["retry-after"] == str(RETRY_AFTER_S)
    assert r.headers["x-request-id"] == "tx-2" and exc.reason == "timeout"
    assert json.loads(r.body) == {"code": "champion_unavailable", "error": "the champion cannot answer",
                                  "request_id": "tx-2"}


def test_client_errors_are_logged_one_line_at_most_every_interval(caplog: pytest.LogCaptureFixture) -> None:
    """A malformed request used to log a 2 KB traceback at ERROR each time; a fuzzer grew the log to 15 MB."""
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("test.limited"), interval_s=1.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="test.limited"):
        assert limited("400", "refused %s", "a")
        for _ in range(99):
            assert not limited("400", "refused %s", "b")
        assert limited("415", "refused %s", "c")  # another kind has its own budget
        now[0] = 1.5
        assert limited("400", "refused %s", "d")
    assert [r.getMessage() for r in caplog.records] == [
        "refused a", "refused c", "refused d (99 more like it in the last 1s not logged)"]
    assert all(r.levelno == logging.INFO and r.exc_info is None for r in caplog.records)


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
