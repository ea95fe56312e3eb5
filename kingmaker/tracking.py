"""MLflow failures in one line: is the tracking server there, and does an `MlflowException` mean "not found".

Every part talks to MLflow through an explicit ``MlflowClient`` (`kingmaker.settings.MlflowSettings.client`);
these helpers let each turn what goes wrong into kingmaker's two kinds of failure (a missing thing is
permanent, an outage temporary), so a user sees one line instead of a traceback or minutes of retries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kingmaker.errors import TemporaryError

if TYPE_CHECKING:
    from mlflow.exceptions import MlflowException

#: MLflow error codes that mean "no such thing" (a name, alias, version, run or artifact), not an outage.
NOT_FOUND = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def check_reachable(tracking_uri: str, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when a tracking *server* does not answer (MLflow's own client would retry
    with backoff for minutes before giving up). Local stores (SQLite, files) are always there."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    import httpx

    try:
        httpx.get(tracking_uri.rstrip("/") + "/health", timeout=timeout).raise_for_status()
    except httpx.HTTPError as exc:
        raise TemporaryError(f"cannot reach the MLflow tracking server at {tracking_uri}: {first_line(exc)}") from exc


def is_not_found(exc: MlflowException) -> bool:
    return getattr(exc, "error_code", "") in NOT_FOUND

