"""The production-shaped stores, used by the product as it is: a real S3 object store (SeaweedFS), a real
PostgreSQL and a real ``mlflow server`` with artifacts proxied to S3 (fixtures in conftest.py, processes
in stores.py). Proven here: every store listens on loopback only and S3 refuses wrong keys; training
registers through the server and its artifacts live in the bucket, not on disk; a fresh process with no
S3 credentials loads the champion through the server; the logs round-trip on ``s3://`` and a reader
keeps up with two writer processes; both Scorers load by alias through the server, the Router logs to S3
(and flushes on SIGTERM), /feedback writes labels there and the drift job reads the window from it; a
registry outage fails client calls and recovers; no credential reaches a log or a command line."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psutil
import pytest

from bentos import procs
from kingmaker import logs
from tests.conftest import ROOT
from training.data import Dataset

from . import stores
from .bentos_support import Outcome, fire, service_env, serving_stack, transactions, wait_until

pytestmark = pytest.mark.integration

MODEL = "fraud-detector"


def run_cli(*args: str, env: dict[str, str], out_dir: Path, name: str, timeout: float = 600, check: bool = True,
            ) -> subprocess.CompletedProcess[str]:
    """The real ``kingmaker`` console script with exactly ``env`` on top of a clean environment (no
    ambient AWS/MLflow settings); stdout and stderr are kept as ``<name>.out``/``.err`` log files. ``check``:
    a non-zero exit fails the test."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "KINGMAKER_", "FSSPEC_"))}
    exe = Path(sys.executable).with_name("kingmaker")
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout, cwd=out_dir,
                          env={**base, **stores.NO_TELEMETRY, "KINGMAKER_HOME": str(out_dir / "home"), **env})
    (out_dir / f"{name}.out").write_text(proc.stdout)
    (out_dir / f"{name}.err").write_text(proc.stderr)
    assert proc.returncode == 0 or not check, f"kingmaker {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc


@dataclass
class Trained:
    registry: stores.Registry
    work: Path
    seconds: float


@pytest.fixture(scope="session")
def trained(registry: stores.Registry, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """`kingmaker train` twice through the tracking server, with nothing but its URL in the environment:
    v1 XGBoost -> @champion, v2 logistic regression -> @challenger."""
    work = tmp_path_factory.mktemp("train-through-server")
    # --n-jobs 1: on a busy 2-core machine XGBoost's two OpenMP threads spin-wait for each other; one
    # thread fitted the same folds ~15x faster (14 s instead of 214 s of CV, measured at load ~10).
    common = ("train", "--data", "synthetic", "--rows", "20000", "--folds", "3", "--bootstrap", "20", "--n-jobs", "1",
              "--tracking-uri", registry.server.url)
    started = time.monotonic()
    run_cli(*common, "--seed", "1", "--candidates", "xgboost", env={}, out_dir=work, name="train-1")
    run_cli(*common, "--seed", "2", "--candidates", "logreg", env={}, out_dir=work, name="train-2")
    return Trained(registry, work, time.monotonic() - started)


def _listening(pids: set[int]) -> set[tuple[str, int]]:
    return {(c.laddr.ip, c.laddr.port) for c in psutil.net_connections("inet")
            if c.status == psutil.CONN_LISTEN and c.pid in pids}


def _family(service: stores.Service) -> set[int]:
    assert service.proc is not None
    parent = psutil.Process(service.proc.pid)
    return {parent.pid, *(p.pid for p in parent.children(recursive=True))}


def test_every_store_is_a_real_server_on_loopback_only(registry: stores.Registry) -> None:
    services = [registry.store.service, *registry.services()]
    for service in services:
        addresses = _listening(_family(service))
        assert addresses, f"{service.name} listens nowhere"
        assert {ip for ip, _ in addresses} == {"127.0.0.1"}, f"{service.name} listens on {addresses}"
    timings = {s.name: round(s.ready_seconds[0], 2) for s in services}
    print(f"\nstart-to-ready seconds: {timings}")


def test_the_object_store_enforces_its_credentials(object_store: stores.ObjectStore) -> None:
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config
    from botocore.exceptions import ClientError

    bucket = object_store.create_bucket("auth-check")
    object_store.client().put_object(Bucket=bucket, Key="a/b.txt", Body=b"kingmaker")
    assert object_store.client().get_object(Bucket=bucket, Key="a/b.txt")["Body"].read() == b"kingmaker"
    assert object_store.keys(bucket, "a/") == ["a/b.txt"]

    wrong = boto3.client("s3", endpoint_url=object_store.endpoint, region_name=stores.REGION,
                         aws_access_key_id=object_store.access_key, aws_secret_access_key="not-the-secret")
    anonymous = boto3.client("s3", endpoint_url=object_store.endpoint, region_name=stores.REGION,
                             config=Config(signature_version=UNSIGNED))
    for client in (wrong, anonymous):
        with pytest.raises(ClientError) as refused:
            client.get_object(Bucket=bucket, Key="a/b.txt")
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_training_registers_through_the_server_with_artifacts_only_in_the_bucket(trained: Trained) -> None:
    from mlflow import MlflowClient

    reg = trained.registry
    client = MlflowClient(tracking_uri=reg.server.url, registry_uri=reg.server.url)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    challenger = client.get_model_version_by_alias(MODEL, "challenger")
    assert (champion.version, challenger.version) == ("1", "2")
    assert champion.tags["kingmaker.candidate"] == "xgboost"
    assert champion.run_id is not None

    # The run's artifacts go through the server (mlflow-artifacts:/) into s3://<bucket>/mlartifacts/...
    run = client.get_run(champion.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info.artifact_uri
    keys = reg.store.keys(reg.bucket, "mlartifacts/")
    run_keys = [k for k in keys if f"/{champion.run_id}/artifacts/" in k]
    names = {k.split("/artifacts/", 1)[1] for k in run_keys}
    assert {"model/MLmodel", "drift_reference/sample.parquet", "drift_reference/bins.json",
            "test_predictions.parquet", "plots/pr_curve.png"} <= names, sorted(names)
    # ... and nowhere on the local disk: neither where the CLI ran nor where the server runs.
    local = [p for root in (trained.work, reg.server.service.log_path.parent) for p in root.rglob("MLmodel")]
    assert local == [], local
    print(f"\ntwo `kingmaker train` runs through the server: {trained.seconds:.1f} s; {len(keys)} objects in the "
          "bucket")


LOAD = textwrap.dedent("""
    import json, sys
    import mlflow.pyfunc, pandas as pd
    from kingmaker.settings import MlflowSettings
    from kingmaker import models
    uri, preds_path = sys.argv[1], sys.argv[2]
    client = MlflowSettings.from_env().client()   # MLFLOW_TRACKING_URI from the environment
    model = models.load_uri(client, uri)
    preds = pd.read_parquet(preds_path)
    scores = model.predict_proba(preds[list(model.features)])
    print(json.dumps({"version": model.ref.version, "max_diff": float(abs(scores - preds["score"].to_numpy()).max())}))
""")


def test_a_fresh_process_loads_the_champion_through_the_server(trained: Trained, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    reg = trained.registry
    client = MlflowClient(tracking_uri=reg.server.url, registry_uri=reg.server.url)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.run_id is not None
    preds = client.download_artifacts(champion.run_id, "test_predictions.parquet", str(tmp_path))
    # No S3 credentials in this process: everything comes through the tracking server.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    out = subprocess.run([sys.executable, "-c", LOAD, f"models:/{MODEL}@champion", preds], capture_output=True,
                         text=True, timeout=300, cwd=ROOT, env={**env, **reg.server.env})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["version"] == champion.version
    assert result["max_diff"] == 0.0


def _prediction_rows(n: int, start: int, writer: str) -> pd.DataFrame:
    rng = np.random.default_rng(start)
    ts = pd.Timestamp("2026-11-30T12:00:00Z") + pd.to_timedelta(np.arange(n), unit="s")
    return pd.DataFrame({
        "request_id": [f"{writer}-{start + i}" for i in range(n)], "ts": ts, "routing_key": "c1", "arm": "champion",
        "served": True, "mode": "split", "model_name": MODEL, "model_version": "1", "score": rng.random(n),
        "decision": False, "threshold": 0.5, "latency_ms": 1.0, "feat_f01": rng.normal(size=n)})


def test_logs_round_trip_on_s3(object_store: stores.ObjectStore, s3_prefix: str,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in object_store.env.items():
        monkeypatch.setenv(key, value)
    predictions, labels = f"{s3_prefix}/predictions", f"{s3_prefix}/labels"
    rows = _prediction_rows(300, 0, "w")
    rows.loc[200:, "ts"] = pd.Timestamp("2026-12-01T00:00:05Z")  # a second date partition
    assert logs.append_predictions(predictions, rows.iloc[:150], ["f01"]) == 150
    assert logs.append_predictions(predictions, rows.iloc[150:], ["f01"]) == 150
    back = logs.read_predictions(predictions).sort_values("request_id", key=lambda s: s.str[2:].astype(int))
    assert back["request_id"].tolist() == rows["request_id"].tolist()
    np.testing.assert_array_equal(back["feat_f01"].to_numpy(), rows["feat_f01"].to_numpy())
    window = logs.read_predictions(predictions, since=pd.Timestamp("2026-12-01T00:00:00Z").to_pydatetime())
    assert len(window) == 100

    first = [{"request_id": "w-1", "label": 0, "label_ts": pd.Timestamp("2026-12-01T01:00:00Z")}]
    later = [{"request_id": "w-1", "label": 1, "label_ts": pd.Timestamp("2026-12-01T02:00:00Z")},
             {"request_id": "w-2", "label": 0, "label_ts": pd.Timestamp("2026-12-01T02:00:00Z")}]
    logs.append_labels(labels, first)
    logs.append_labels(labels, later)
    assert logs.read_labels(labels).set_index("request_id")["label"].to_dict() == {"w-1": 1, "w-2": 0}

    bucket, prefix = s3_prefix.removeprefix("s3://").split("/", 1)
    keys = object_store.keys(bucket, prefix + "/")
    assert len(keys) == 3 + 2  # predictions: 1 file, then 2 (that append spans two dates); labels: 1 per append
    assert all(k.rsplit("/", 1)[1].startswith("part-") and k.endswith(".parquet") for k in keys), keys


WRITER = textwrap.dedent("""
    import sys, time
    from tests.integration.test_stores import _prediction_rows
    from kingmaker import logs
    url, writer, start_at = sys.argv[1], sys.argv[2], float(sys.argv[5])
    batches, rows = int(sys.argv[3]), int(sys.argv[4])
    time.sleep(max(0.0, start_at - time.time()))   # both writers begin at the same moment
    for b in range(batches):
        logs.append_predictions(url, _prediction_rows(rows, b * rows, writer), ["f01"])
        time.sleep(0.3)  # appends spread over ~5 s, as a Router's flushes are, so reads fall between them
""")


def test_two_writer_processes_append_to_one_s3_log_without_losing_a_row(
        object_store: stores.ObjectStore, s3_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in object_store.env.items():
        monkeypatch.setenv(key, value)
    url, batches, rows = f"{s3_prefix}/predictions", 15, 40
    assert logs.read_predictions(url).empty
    start_at = time.time() + 8  # after both interpreters have imported pandas/pyarrow/s3fs
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, url, name, str(batches), str(rows), str(start_at)],
                                cwd=ROOT, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)}) for name in ("a", "b")]
    # Meanwhile this process reads the log again and again, as the controller and the Router do while
    # other replicas write: every read succeeds and sees no fewer rows than the one before.
    seen = [0]
    while any(w.poll() is None for w in writers):
        seen.append(len(logs.read_predictions(url)))
        assert seen[-1] >= seen[-2]
        time.sleep(0.2)
    for w in writers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err[-3000:]
    assert len({n for n in seen if 0 < n < 2 * batches * rows}) >= 2, f"reads did not overlap the writes: {seen}"

    back = logs.read_predictions(url)  # the same process again: it must see the other processes' files
    assert len(back) == 2 * batches * rows
    assert back["request_id"].is_unique
    bucket, prefix = s3_prefix.removeprefix("s3://").split("/", 1)
    keys = object_store.keys(bucket, prefix + "/")
    assert len(keys) == 2 * batches and len(set(keys)) == len(keys)  # one file per append, none overwritten
    assert not [k for k in keys if "/." in k], "a temporary file was left behind"


@pytest.fixture
def fast_failing_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """MLflow's HTTP client retries for minutes by default; an outage test wants the failure itself."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    yield


def test_registry_outage_fails_client_calls_and_recovers(private_registry: stores.Registry,
                                                         fast_failing_client: None) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    reg = private_registry
    client = MlflowClient(tracking_uri=reg.server.url, registry_uri=reg.server.url)
    client.create_registered_model(MODEL)
    exp = client.create_experiment("outage")
    run = client.create_run(exp)
    client.log_text(run.info.run_id, "kept", "note.txt")  # an artifact through the proxy into S3
    version = client.create_model_version(MODEL, f"runs:/{run.info.run_id}/note.txt", run.info.run_id)
    client.set_registered_model_alias(MODEL, "champion", version.version)

    def resolve() -> str:
        return str(client.get_model_version_by_alias(MODEL, "champion").version)

    # PostgreSQL down, server up: the server answers with an error, the client raises.
    reg.postgres.service.stop()
    with pytest.raises(MlflowException):
        resolve()
    assert reg.server.service.running()
    reg.postgres.service.start()
    assert _eventually(resolve) == version.version

    # Both down: the client cannot connect at all; both back: same alias, same version, artifact intact.
    reg.stop()
    started = time.monotonic()
    with pytest.raises(MlflowException):
        resolve()
    failed_after = time.monotonic() - started
    reg.start()
    assert resolve() == version.version
    assert client.download_artifacts(run.info.run_id, "note.txt", str(reg.server.service.log_path.parent / "dl"))
    pg, server = reg.postgres.service, reg.server.service
    print(f"\nregistry down: a call failed after {failed_after:.2f} s; stop took {pg.stop_seconds[-1]:.2f} s "
          f"(PostgreSQL) + {server.stop_seconds[-1]:.2f} s (mlflow server); restart ready in "
          f"{pg.ready_seconds[-1]:.2f} s + {server.ready_seconds[-1]:.2f} s")


def _eventually(call: Callable[[], str], timeout: float = 30.0) -> str:
    """The first successful result of ``call()`` within ``timeout`` (the server's pool reconnects)."""
    from mlflow.exceptions import MlflowException

    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except MlflowException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_serving_loads_both_arms_through_the_server_and_logs_to_s3_and_drift_reads_it(
        trained: Trained, object_store: stores.ObjectStore, s3_prefix: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    reg = trained.registry
    for key, value in object_store.env.items():  # this process reads the logs too
        monkeypatch.setenv(key, value)
    predictions, labels = f"{s3_prefix}/predictions", f"{s3_prefix}/labels"
    env = {**object_store.env, **reg.server.env, "KINGMAKER_PREDICTIONS_URL": predictions,
           "KINGMAKER_LABELS_URL": labels, "KINGMAKER_LOG_FLUSH_ROWS": "100000", "KINGMAKER_LOG_FLUSH_SECONDS": "3"}
    bodies = transactions(1300, seed=11)
    first, last = bodies[:1200], bodies[1200:]
    with serving_stack(tmp_path / "home", tmp_path, {"mode": "split", "challenger_weight": 0.5, "pairing": "off"}, env=env) as stack:
        for scorer, version in ((stack.champion, "1"), (stack.challenger, "2")):
            assert scorer is not None
            info = httpx.post(f"{scorer.url}/info", json={}, timeout=10).json()
            assert str(info["model_version"]) == version, info
        outcomes = asyncio.run(fire(f"{stack.router.url}/predict", first, concurrency=8))
        assert [o.status for o in outcomes] == [200] * len(first)
        assert {o.answer["arm"] for o in outcomes if o.answer} == {"champion", "challenger"}

        wait_until(lambda: len(logs.read_predictions(predictions)) == len(first), 60, "the Router's flush to S3")
        # ids the Router no longer buffers: it finds them by reading the prediction log back from S3
        labelled = [b["request_id"] for b in first[:50]]
        feedback = httpx.post(f"{stack.router.url}/feedback", headers={"Authorization": "Bearer it-token"},
                              json={"labels": [{"request_id": rid, "label": i % 2} for i, rid in enumerate(labelled)]},
                              timeout=30).json()
        assert (feedback["written"], feedback["unknown"]) == (50, 0), feedback

        outcomes = asyncio.run(fire(f"{stack.router.url}/predict", last, concurrency=8))
        assert [o.status for o in outcomes] == [200] * len(last)
        unflushed = len(bodies) - len(logs.read_predictions(predictions))
        stack.router.stop(timeout=60)  # SIGTERM right away: the Router writes what it still buffers
    print(f"\n{unflushed} of {len(last)} rows of the last burst were still buffered at SIGTERM")

    logged = logs.read_predictions(predictions)
    assert sorted(logged["request_id"]) == sorted(b["request_id"] for b in bodies)
    assert set(logged["model_version"]) == {"1", "2"}
    assert set(logs.read_labels(labels)["request_id"]) == set(labelled)

    out = run_cli("drift", "--window", "2h", "--predictions-url", predictions, "--output-dir", str(tmp_path / "drift"),
                  env={**object_store.env, **reg.server.env}, out_dir=tmp_path, name="drift")
    assert f"({len(bodies)} requests, champion v1, challenger v2)" in out.stdout, out.stdout
    drift_run = re.search(r"MLflow run: (\w+)", out.stdout)
    assert drift_run, out.stdout
    report = [k for k in reg.store.keys(reg.bucket, "mlartifacts/") if f"/{drift_run[1]}/artifacts/" in k]
    assert {k.rsplit("/", 1)[1] for k in report} >= {"drift.json", "report.html"}, report


def test_two_router_replicas_write_one_s3_log_without_clobbering(
        trained: Trained, object_store: stores.ObjectStore, s3_prefix: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two Router processes (two replicas: each its own segment folder, as each pod has its own disk) log to the
    same ``s3://`` dataset at once: every answered request is there once, each file has a name of its own
    (``part-<owner>-<seq>``, the owner unique per process) and none replaced another."""
    reg = trained.registry
    for key, value in object_store.env.items():
        monkeypatch.setenv(key, value)
    predictions = f"{s3_prefix}/predictions"
    env = {**object_store.env, **reg.server.env, "KINGMAKER_PREDICTIONS_URL": predictions,
           "KINGMAKER_LABELS_URL": f"{s3_prefix}/labels", "KINGMAKER_LOG_FLUSH_ROWS": "50",
           "KINGMAKER_LOG_FLUSH_SECONDS": "0.5"}
    bodies = transactions(1200, seed=21)
    with serving_stack(tmp_path / "home", tmp_path, {"mode": "split", "challenger_weight": 0.5, "pairing": "off"}, env=env) as stack:
        assert stack.challenger is not None
        second = procs.router(procs.free_port(), stack.champion.url, stack.challenger.url, config=stack.config,
                              env={**service_env(tmp_path / "home", tmp_path), **env,
                                   "KINGMAKER_LOG_SEGMENT_DIR": str(tmp_path / "segments-2")},
                              log_dir=tmp_path / "service-logs").start()
        try:
            second.wait_ready(240)

            async def both() -> list[list[Outcome]]:  # the two replicas at the same time
                return list(await asyncio.gather(fire(f"{stack.router.url}/predict", bodies[0::2], concurrency=4),
                                                 fire(f"{second.url}/predict", bodies[1::2], concurrency=4)))

            outcomes = [o for half in asyncio.run(both()) for o in half]
            assert sorted(o.status or 0 for o in outcomes) == [200] * len(bodies)
        finally:
            second.stop(timeout=60)  # SIGTERM: each writes what it still holds
            stack.router.stop(timeout=60)

    logged = logs.read_predictions(predictions)
    assert len(logged) == len(bodies) and sorted(logged["request_id"]) == sorted(b["request_id"] for b in bodies)
    bucket, prefix = s3_prefix.removeprefix("s3://").split("/", 1)
    keys = object_store.keys(bucket, prefix + "/predictions/")
    names = [k.rsplit("/", 1)[1] for k in keys]
    owners = {n.removeprefix("part-").rsplit("-", 1)[0] for n in names}
    assert len(owners) == 2, owners  # one owner per Router process
    assert len(set(names)) == len(names) > 2  # many appends, no name used twice
    assert not [k for k in keys if "/." in k], "a temporary file was left behind"
    print(f"\ntwo Routers: {len(bodies)} requests, {len(keys)} files from {len(owners)} writers, no row lost or doubled")


def drifted_pattern(n: int, seed: int) -> tuple[Dataset, np.ndarray]:
    """Transactions from the synthetic generator labelled by a NEW fraud pattern: fraud now follows f07 and f11
    (about 3.5 % of transactions), features the generator's own pattern (f01-f04, amount) does not use, so a model
    trained on the old pattern is blind to it. Returns (the generator's data set, the new labels)."""
    from training.data import synthetic

    ds = synthetic(rows=n, seed=seed)
    f, rng = ds.frame, np.random.default_rng(seed)
    return ds, (rng.random(n) < 1 / (1 + np.exp(-(-5.2 + 2.0 * f["f07"] + 1.8 * f["f11"])))).astype(int)


def drifted_traffic(n: int, seed: int, champion: Any, start: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Served traffic whose fraud pattern moved (`drifted_pattern`), scored by the real ``champion``; shadow rows
    of a challenger under the same request ids (the set must count each transaction once). Labels arrive 10
    minutes after each prediction. Returns (prediction-log rows, label rows)."""
    ds, y = drifted_pattern(n, seed)
    f = ds.frame
    ts = start + pd.to_timedelta(np.linspace(0, 3 * 3600, n), unit="s")
    ids = [f"drift-{seed}-{i}" for i in range(n)]
    score = champion.predict_proba(f[list(champion.features)])
    feats = {logs.feature_column(c): f[c].to_numpy() for c in champion.features}
    served = pd.DataFrame({"request_id": ids, "ts": ts, "routing_key": f["customer_id"].astype(str), "arm": "champion",
                           "served": True, "mode": "shadow", "model_name": MODEL, "model_version": champion.ref.version,
                           "score": score, "decision": score >= champion.threshold, "threshold": champion.threshold,
                           "latency_ms": 2.0, **feats})
    shadow = served.assign(arm="challenger", served=False, model_version="2", score=0.5, decision=False)
    labels = pd.DataFrame({"request_id": ids, "label": y, "label_ts": ts + pd.Timedelta(minutes=10)})
    return pd.concat([served, shadow], ignore_index=True), labels


def test_retrain_builds_its_set_from_the_s3_logs_and_registers_a_cheaper_challenger(
        trained: Trained, object_store: stores.ObjectStore, s3_prefix: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`kingmaker retrain` through the tracking server on logs in S3 whose fraud pattern drifted: the candidate it
    trains on the served traffic costs less than the champion on the newest matured window and becomes @challenger
    (replacing v2: --replace), with the lineage on the run and the version; with a margin nobody can meet it records
    why and exits 0; without --replace it leaves the challenger under evaluation alone."""
    from mlflow import MlflowClient

    from kingmaker import models

    reg = trained.registry
    for key, value in {**object_store.env, **reg.server.env}.items():
        monkeypatch.setenv(key, value)
    client = MlflowClient(tracking_uri=reg.server.url, registry_uri=reg.server.url)
    champion = models.load_uri(client, f"models:/{MODEL}@champion")
    predictions, labels = f"{s3_prefix}/predictions", f"{s3_prefix}/labels"
    rows, label_rows = drifted_traffic(12000, 31, champion, pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=5))
    logs.append_predictions(predictions, rows, list(champion.features))
    logs.append_labels(labels, label_rows)
    env = {**object_store.env, **reg.server.env}
    common = ("retrain", "--predictions-url", predictions, "--labels-url", labels, "--label-delay", "1h",
              "--candidates", "xgboost", "--folds", "2", "--bootstrap", "20", "--n-jobs", "1",
              "--tracking-uri", reg.server.url)

    kept = run_cli(*common, env=env, out_dir=tmp_path, name="retrain-kept")
    assert kept.stdout.splitlines()[-1] == (f"not retraining: challenger v2 of {MODEL} is under evaluation "
                                            "(--replace retrains anyway)")

    rejected = run_cli(*common, "--replace", "--margin", "-100000", env=env, out_dir=tmp_path, name="retrain-rejected")
    assert rejected.stdout.splitlines()[-1].startswith("not registered: the candidate fails the gate"), rejected.stdout
    assert str(client.get_model_version_by_alias(MODEL, "challenger").version) == "2"

    out = run_cli(*common, "--replace", env=env, out_dir=tmp_path, name="retrain")
    assert out.stdout.splitlines()[-1].startswith(f"registered: models:/{MODEL}@challenger -> version 3: the "
                                                  "candidate passes"), out.stdout
    version = client.get_model_version_by_alias(MODEL, "challenger")
    tags = version.tags
    assert str(version.version) == "3" and tags["kingmaker.retrain.champion_version"] == champion.ref.version
    assert tags["kingmaker.retrain.transactions"] == "12000" and tags["kingmaker.retrain.logged_rows"] == "24000"
    n_train, n_gate = int(tags["kingmaker.retrain.training_rows"]), int(tags["kingmaker.retrain.gate_rows"])
    assert n_train + n_gate == 12000 and n_gate == 2400  # every transaction matured (labels within the delay)
    assert int(tags["kingmaker.retrain.training_frauds"]) + int(tags["kingmaker.retrain.gate_frauds"]) == label_rows["label"].sum()
    assert tags["kingmaker.retrain.training_window_end"] < tags["kingmaker.retrain.gate_window_start"]
    cost = {k: float(tags[f"kingmaker.retrain.{k}_cost_per_1k"]) for k in ("champion", "candidate")}
    assert cost["candidate"] < cost["champion"]
    run = client.get_run(version.run_id)
    inputs = {i.tags[0].value: i.dataset.digest for i in run.inputs.dataset_inputs}
    assert inputs["gate"] == tags["kingmaker.retrain.gate_digest"] and inputs["retrain"] == tags["kingmaker.retrain.retrain_digest"]
    rejected_run = re.search(r"\(run (\w+)\)", rejected.stdout)
    assert rejected_run and client.get_run(rejected_run[1]).data.tags["kingmaker.retrain.outcome"] == "rejected"
    print(f"\ndrifted pattern, newest {n_gate} matured transactions: champion v{champion.ref.version} "
          f"{cost['champion']:.1f} vs retrained candidate {cost['candidate']:.1f} per 1,000 transactions "
          f"(difference CI {tags['kingmaker.retrain.difference_ci']})")


def test_credentials_travel_only_in_the_environment(trained: Trained,
                                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    """Last in this file: it reads every log the stores, the CLI and the services wrote in this session."""
    reg = trained.registry
    secrets_ = {"S3 access key": reg.store.access_key, "S3 secret key": reg.store.secret_key,
                "PostgreSQL password": reg.postgres.password}
    files = stores.log_files(tmp_path_factory.getbasetemp())
    names = {f.name for f in files}
    assert {"weed.log", "postgresql.log", "mlflow-server.log", "train-1.err"} <= names, sorted(names)
    for path in files:
        text = path.read_text(errors="replace")
        for what, value in secrets_.items():
            assert value not in text, f"the {what} appears in {path}"
    for service in (reg.store.service, *reg.services()):
        for pid in _family(service):
            cmdline = " ".join(psutil.Process(pid).cmdline())
            for what, value in secrets_.items():
                assert value not in cmdline, f"the {what} is on the command line of {service.name}"
    print(f"\nno credential in {len(files)} log files")
