"""MLflow failures as the two kinds of `kingmaker.errors`, written once for training, the drift job and the
controller.

- `check_reachable` — MLflow's client retries an unreachable tracking *server* with backoff for minutes
  before it gives up; ask its ``/health`` endpoint first and fail in one line instead.
- `error` / `translated` — what a failed MLflow call means: MLflow refused the request as naming nothing or
  being invalid (`PERMANENT_CODES`: a missing model, alias or version, a bad argument) -> `PermanentError`;
  anything else from MLflow or the transport (the store is down, overloaded, failing) -> `TemporaryError`.

mlflow and httpx are imported inside the functions that need them: importing this module is free.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from kingmaker.errors import KingmakerError, PermanentError, TemporaryError

#: MLflow error codes that retrying cannot fix: the request names nothing, or is invalid.
PERMANENT_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})


#: MLflow's HTTP client retries a failing server 7 times with exponential backoff and waits up to 120 s per
#: attempt, so one call against a registry that is down can take minutes. Services that must answer "the
#: registry is down" quickly (the Scorer's start-up, the controller's reconcile) bound it; an operator's own
#: ``MLFLOW_HTTP_REQUEST_*`` settings win.
BOUNDED_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def bound_http_retries() -> None:
    """Set `BOUNDED_HTTP` in this process's environment where the variable is not set (MLflow reads it per call)."""
    for key, value in BOUNDED_HTTP.items():
        os.environ.setdefault(key, value)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (MLflow's can run to a page), at most 300 characters."""
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def check_reachable(tracking_uri: str, timeout: float = 5.0) -> None:
    """Raise a one-line `TemporaryError` when a tracking server does not answer ``/health``.

    Local stores (``sqlite:///...``, a folder) have no server and always pass.
    """
    if not tracking_uri.startswith(("http://", "https://")):
        return
    import httpx

    try:
        httpx.get(tracking_uri.rstrip("/") + "/health", timeout=timeout).raise_for_status()
    except httpx.HTTPError as exc:
        raise TemporaryError(f"MLflow tracking store {tracking_uri} unreachable: {first_line(exc)}") from exc


def is_permanent(exc: BaseException) -> bool:
    """MLflow refused the request as naming nothing or being invalid (an `MlflowException` code)."""
    return getattr(exc, "error_code", None) in PERMANENT_CODES


def error(what: str, exc: BaseException) -> KingmakerError:
    """The kingmaker error for a failed MLflow call (an `MlflowException` or an `OSError`), one line."""
    kind = PermanentError if is_permanent(exc) else TemporaryError
    return kind(f"MLflow: {what}: {first_line(exc)}")


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Run MLflow calls; an `MlflowException` or `OSError` leaves as `error` (``what`` says which call)."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (MlflowException, OSError) as exc:
        raise error(what, exc) from exc
