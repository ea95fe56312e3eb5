"""MLflow failures as kingmaker errors (`kingmaker.mlflow_errors`): a real SQLite store, real HTTP servers on
127.0.0.1 and a dead port — the one mapping training, the drift job and the controller share."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos import databricks_pb2 as codes

from kingmaker import mlflow_errors
from kingmaker.errors import PermanentError, TemporaryError


@contextmanager
def health_server(status: int) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_healthy_server_and_local_stores_pass(tmp_path: Path) -> None:
    with health_server(200) as url:
        mlflow_errors.check_reachable(url + "/")
    mlflow_errors.check_reachable(f"sqlite:///{tmp_path}/nowhere/mlflow.db")  # no server to ask
    mlflow_errors.check_reachable(str(tmp_path))


def test_a_dead_or_failing_server_is_one_temporary_line() -> None:
    url = f"http://127.0.0.1:{dead_port()}"
    with pytest.raises(TemporaryError, match=rf"^MLflow tracking store {url} unreachable: ") as dead:
        mlflow_errors.check_reachable(url, timeout=2.0)
    assert "\n" not in str(dead.value)
    with health_server(503) as failing, pytest.raises(TemporaryError, match=r"unreachable: .*503"):
        mlflow_errors.check_reachable(failing, timeout=2.0)


def test_calls_on_a_real_store_are_mapped(tmp_path: Path) -> None:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    with (pytest.raises(PermanentError, match=r"^MLflow: reading no-such-model: .*no-such-model"),
          mlflow_errors.translated("reading no-such-model")):
        client.get_registered_model("no-such-model")
    client.create_registered_model("m")
    with pytest.raises(PermanentError, match=r"^MLflow: aliasing: "), mlflow_errors.translated("aliasing"):
        client.set_registered_model_alias("m", "champion", "7")  # no version 7
    with mlflow_errors.translated("reading m"):
        assert client.get_registered_model("m").name == "m"


@pytest.mark.parametrize(("exc", "kind"), [
    (MlflowException("gone", error_code=codes.RESOURCE_DOES_NOT_EXIST), PermanentError),
    (MlflowException("bad", error_code=codes.INVALID_PARAMETER_VALUE), PermanentError),
    (MlflowException("absent", error_code=codes.NOT_FOUND), PermanentError),
    (MlflowException("boom\nstack trace ...", error_code=codes.INTERNAL_ERROR), TemporaryError),
    (MlflowException("busy", error_code=codes.TEMPORARILY_UNAVAILABLE), TemporaryError),
    (ConnectionRefusedError("refused"), TemporaryError),
])
def test_permanent_only_when_mlflow_says_the_request_names_nothing(exc: Exception, kind: type) -> None:
    with pytest.raises(kind) as raised, mlflow_errors.translated("the call"):
        raise exc
    assert type(raised.value) is kind and raised.value.__cause__ is exc
    assert str(raised.value).startswith("MLflow: the call: ") and "\n" not in str(raised.value)


def test_other_errors_pass_through() -> None:
    with pytest.raises(KeyError), mlflow_errors.translated("the call"):
        raise KeyError("not an MLflow failure")


def test_importing_it_loads_neither_mlflow_nor_httpx() -> None:
    code = "import sys, kingmaker.mlflow_errors; print(sorted({'mlflow', 'httpx'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
