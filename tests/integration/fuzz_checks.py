"""Checks the fuzz tier adds to Schemathesis's own (loaded by `st run` through ``SCHEMATHESIS_HOOKS``): besides
no 5xx (``not_a_server_error``) and an answer to every request (a connection closed without one is a network
error, which fails the run), no body may carry a traceback, and every error answer has our shape."""

from __future__ import annotations

import json
from typing import Any

import schemathesis

from bentos.messages import ErrorCode

CODES = {c.value for c in ErrorCode}
TRACEBACK_MARKS = ("Traceback (most recent call last)", 'File "/')


@schemathesis.check
def no_traceback_in_body(ctx: Any, response: Any, case: Any) -> None:
    text = response.content.decode("utf-8", errors="replace")
    found = [m for m in TRACEBACK_MARKS if m in text]
    if found:
        raise AssertionError(f"the body carries a traceback ({found[0]!r}): {text[:300]}")


@schemathesis.check
def error_answers_have_a_code(ctx: Any, response: Any, case: Any) -> None:
    if response.status_code < 400:
        return
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(f"a {response.status_code} answer that is not JSON: {response.content[:200]!r}") from None
    if not isinstance(body, dict) or body.get("code") not in CODES or not isinstance(body.get("error"), str):
        raise AssertionError(f"a {response.status_code} answer without a stable code and message: {str(body)[:300]}")
