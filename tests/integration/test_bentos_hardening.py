"""Issue 10's defects, each against real ``bentoml serve`` processes: what a hostile client found, and that it
is gone. One stack serves the read-only probes; the ones that break a store or a config file get their own."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import string
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pyarrow as pa
import pytest

from bentos import procs
from bentos.procs import ServiceProcess
from kingmaker import logs

from .bentos_support import Stack, fire, metric, service_env, serving_stack, transactions, wait_until

pytestmark = pytest.mark.integration
FEEDBACK = {"Authorization": "Bearer it-token"}


@pytest.fixture(scope="module")
def stack(serving_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with serving_stack(serving_home, tmp_path_factory.mktemp("hardening"), {"challenger_weight": 0.5}) as s:
        yield s


def family(svc: ServiceProcess) -> list[psutil.Process]:
    parent = psutil.Process(svc.pid)
    return [parent, *parent.children(recursive=True)]


def limit_file_size(svc: ServiceProcess, nbytes: int | None) -> None:
    """A full disk, for real: the kernel refuses (EFBIG) every write of the server's processes beyond ``nbytes``
    into a file (None lifts the limit). Python ignores SIGXFSZ, so the writes fail instead of killing it."""
    for p in family(svc):
        _, hard = p.rlimit(psutil.RLIMIT_FSIZE)
        p.rlimit(psutil.RLIMIT_FSIZE, (hard if nbytes is None else nbytes, hard))


def temporary_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.tmp")) if root.exists() else []


def arrow_stream(table: pa.Table, compression: str | None = None) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression=compression)) as w:
        w.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


# --- 1 (high): request ids that cannot be a header ------------------------------------------------

@pytest.mark.parametrize("request_id", ["tx-€", "tx-😀", "tx-\u0001", "tx-\r\nX-Evil: 1"])
def test_01_bad_request_ids_are_a_400_and_never_open_the_circuit(stack: Stack, request_id: str) -> None:
    """They were copied into X-Request-ID: a 500 (an empty reply for control characters), counted as the
    champion failing: five of them opened its circuit and every client got 503s for ~2 s."""
    body = {**transactions(1, seed=101)[0], "request_id": request_id}
    with httpx.Client(timeout=10) as http:
        for _ in range(6):
            r = http.post(f"{stack.router.url}/predict", json=body)
            assert r.status_code == 400 and r.json()["code"] == "invalid_request", r.text
            assert r.json()["detail"][0]["loc"] == ["request_id"]
        for path in ("/score", "/explain"):
            r = http.post(f"{stack.champion.url}{path}", json={"features": body["features"], "request_id": request_id})
            assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["request_id"], r.text
        ok = http.post(f"{stack.router.url}/predict", json={**body, "request_id": "tx-after"})
        assert ok.status_code == 200 and ok.headers["x-request-id"] == "tx-after"
        arms = http.post(f"{stack.router.url}/routing", json={}).json()["arms"]
    assert not arms["champion"]["circuit_open"] and not arms["challenger"]["circuit_open"]


# --- 5, 6, 16: Arrow bodies -------------------------------------------------------------------------

def test_05_an_arrow_decompression_bomb_is_refused_before_it_is_decompressed(stack: Stack) -> None:
    """12.5 KB of zstd holding 50 M rows grew the Scorer from 405 to 797 MB, never given back."""
    features = httpx.post(f"{stack.champion.url}/info", json={}).json()["features"]
    bomb = arrow_stream(pa.table({features[0]: pa.array(np.zeros(50_000_000))}), "zstd")
    assert len(bomb) < 100_000
    worker = max(family(stack.champion), key=lambda p: p.memory_info().rss)
    before = worker.memory_info().rss
    r = httpx.post(f"{stack.champion.url}/arrow/score_batch", content=bomb, timeout=60,
                   headers={"Content-Type": "application/vnd.apache.arrow.stream"})
    assert r.status_code == 413 and r.json()["code"] == "too_large", r.text
    assert worker.memory_info().rss - before < 50 * 2**20, "the body was decompressed"


def test_06_16_duplicate_columns_and_doubles_beyond_float32(stack: Stack) -> None:
    features = httpx.post(f"{stack.champion.url}/info", json={}).json()["features"]
    arrow = {"Content-Type": "application/vnd.apache.arrow.stream"}
    duplicate = pa.Table.from_arrays([pa.array([1.0])] * (len(features) + 1), names=[*features, features[0]])
    r = httpx.post(f"{stack.champion.url}/arrow/score_batch", content=arrow_stream(duplicate), headers=arrow)
    assert r.status_code == 400 and r.json()["detail"][0]["type"] == "duplicate_column", r.text  # was a 500
    huge = pa.table({f: [1e308 if f == features[1] else 1.0] for f in features})
    by_arrow = httpx.post(f"{stack.champion.url}/arrow/score_batch", content=arrow_stream(huge), headers=arrow)
    by_json = httpx.post(f"{stack.champion.url}/score", json={"features": {f: huge.column(f)[0].as_py() for f in features}})
    via_router = httpx.post(f"{stack.router.url}/predict", json={"features": dict.fromkeys(features, 1e+308)})
    for r in (by_arrow, by_json, via_router):  # JSON used to accept it, Arrow to call it "NaN/inf"
        assert r.status_code == 400, r.text
        assert "within ±3.4e38 (the models compute in 32-bit floats)" in r.json()["detail"][0]["msg"]


# --- 7, 14: media types and what error answers say ------------------------------------------------------

def test_07_14_other_media_types_are_a_415_and_error_answers_leak_nothing(stack: Stack) -> None:
    with httpx.Client(timeout=10) as http:
        for url in (f"{stack.router.url}/{p}" for p in ("predict", "predict_batch", "feedback", "routing")):
            r = http.post(url, content=b"{}", headers={"Content-Type": "multipart/form-data", **FEEDBACK})
            assert r.status_code == 415 and r.json()["code"] == "unsupported_media_type", (url, r.text)  # was a 500
        for path in ("score", "score_batch", "explain", "info"):
            r = http.post(f"{stack.champion.url}/{path}", content=b"{}", headers={"Content-Type": "multipart/form-data"})
            assert r.status_code == 415, (path, r.text)
        form = http.post(f"{stack.router.url}/predict", content=b"card=4111111111111111&cvv=123",
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert form.status_code == 415 and "4111" not in form.text  # a form body used to be echoed in the 400
        routing = http.post(f"{stack.router.url}/routing", json={}).json()
    text = json.dumps(routing)
    assert "127.0.0.1" not in text and "http" not in text and "run_id" not in text and str(stack.config) not in text
    assert routing["arms"]["champion"]["model"]["model_version"] and routing["config"]["mode"] == "split"


# --- 9: metric cardinality -----------------------------------------------------------------------------------

def test_09_unknown_paths_add_no_series(stack: Stack) -> None:
    """300 requests to random paths added 6,000 series: every path was a label value."""
    rng = random.Random(9)
    with httpx.Client(timeout=10) as http:
        http.get(f"{stack.router.url}/no-such-path")  # the one label value unknown paths share now exists
        before = len(http.get(f"{stack.router.url}/metrics").text.splitlines())
        for _ in range(300):
            path = "".join(rng.choices(string.ascii_lowercase, k=12))
            r = http.request(rng.choice(["GET", "POST"]), f"{stack.router.url}/{path}/{rng.randint(0, 10**6)}")
            assert r.status_code == 404 and r.json()["code"] == "not_found"
        text = http.get(f"{stack.router.url}/metrics").text
    assert len(text.splitlines()) - before < 20  # counters of the one label value grow, series do not
    assert "/no-such-path" not in text


# --- 13: client errors in the log ------------------------------------------------------------------------------

def test_13_malformed_requests_log_one_line_not_a_traceback(stack: Stack) -> None:
    """Each malformed request logged a 2.1 KB traceback at ERROR; a fuzz run grew the log to 15 MB."""
    assert stack.router.log_path is not None
    size = stack.router.log_path.stat().st_size
    bodies = [b"{", b"[]", b'{"features": 1}', b'{"rows": "x"}', b"\xff\xfe", b'{"features": {}, "extra": 1}']
    with httpx.Client(timeout=10) as http:
        for i in range(300):
            r = http.post(f"{stack.router.url}/predict", content=bodies[i % len(bodies)],
                          headers={"Content-Type": "application/json"})
            assert r.status_code == 400
    time.sleep(0.5)
    added = stack.router.log_path.read_bytes()[size:].decode(errors="replace")
    assert "Traceback" not in added and "[ERROR]" not in added
    assert len(added) < 2_000, added[-2_000:]  # a few rate-limited lines, not 300 x 2 KB


# --- 15: relabels in one /feedback request ------------------------------------------------------------------------

def test_15_a_relabel_in_one_request_says_what_was_kept(stack: Stack) -> None:
    body = transactions(1, seed=115)[0]
    assert httpx.post(f"{stack.router.url}/predict", json=body).status_code == 200
    rid = body["request_id"]
    r = httpx.post(f"{stack.router.url}/feedback", headers=FEEDBACK,
                   json={"labels": [{"request_id": rid, "label": 0}, {"request_id": rid, "label": 1}]})
    assert r.status_code == 200
    assert r.json() == {
        "received": 2, "written": 1, "duplicates": 0, "updated": 0, "superseded": 1, "superseded_ids": [rid],
        "unknown": 0, "unknown_ids": []}  # not "1 duplicate": the 0 was superseded by the 1, which is kept
    wait_until(lambda: rid in set(logs.read_labels(stack.labels_url)["request_id"]), 10, "the label in the log")
    assert logs.read_labels(stack.labels_url).set_index("request_id").loc[rid, "label"] == 1


# --- 8: one Prometheus multiprocess folder per process --------------------------------------------------------

def test_08_each_process_exposes_only_its_own_series_and_a_new_server_wipes_none(
        stack: Stack, serving_home: Path, tmp_path: Path) -> None:
    with httpx.Client(timeout=10) as http:
        for body in transactions(20, seed=108):
            http.post(f"{stack.router.url}/predict", json=body)
        router_before = http.get(f"{stack.router.url}/metrics").text
        champion_text = http.get(f"{stack.champion.url}/metrics").text
        assert "kingmaker_router_requests_total" in router_before and "kingmaker_scorer_requests_total" not in router_before
        assert "kingmaker_scorer_requests_total" in champion_text and "kingmaker_router_requests_total" not in champion_text
        served = sum(metric(router_before, "kingmaker_router_requests_total", arm=a, code="200", mode="split")
                     for a in ("champion", "challenger"))
        assert served >= 20
        # a re-pointed arm: another Scorer starts (with the same BENTOML_HOME base, as kingmaker serve does)
        env = service_env(serving_home, stack.config.parent)
        extra = procs.scorer("challenger", "models:/fraud-detector@challenger", procs.free_port(), env=env,
                             log_dir=tmp_path)
        try:
            extra.start().wait_ready(240)
            router_after = http.get(f"{stack.router.url}/metrics").text
        finally:
            extra.stop()
    assert sum(metric(router_after, "kingmaker_router_requests_total", arm=a, code="200", mode="split")
               for a in ("champion", "challenger")) >= served  # the guardrails' series survived the start


def test_08_servers_sharing_a_bentoml_home_are_told_so(serving_home: Path, tmp_path: Path) -> None:
    """Outside `kingmaker serve` and the chart (bare `bentoml serve` with the default home) each server says in
    its log that its /metrics mixes another's series."""
    env = {**os.environ, **procs.SCORER_ENV, **service_env(serving_home, tmp_path), "BENTOML_HOME": str(tmp_path / "shared")}
    first, second = (bare_serve(name, env, tmp_path) for name in ("first", "second"))
    try:
        first.wait_ready(240)
        second.wait_ready(240)
        httpx.post(f"{second.url}/info", json={})
        httpx.get(f"{first.url}/metrics")
        wait_until(lambda: "is shared with another server" in first.log_tail(50), 10, "the warning")
    finally:
        second.stop()
        first.stop()


def bare_serve(name: str, env: dict[str, str], log_dir: Path) -> ServiceProcess:
    """A Scorer started as `bentoml serve` alone starts it: BENTOML_HOME as given, not a folder of its own."""
    import subprocess
    import sys

    svc = ServiceProcess(name, procs.SCORER, procs.free_port(), log_path=log_dir / f"{name}.log")
    cmd = [sys.executable, "-m", "bentoml", "serve", svc.target, "--host", svc.host, "--port", str(svc.port)]
    with open(log_dir / f"{name}.log", "ab") as out:
        svc.proc = subprocess.Popen(cmd, env=env, cwd=svc.working_dir, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
    return svc


# --- 4, 12: a full disk under the label and prediction logs ------------------------------------------------------

def test_04_12_a_full_disk_leaves_the_logs_readable_and_no_temporary_file(serving_home: Path, tmp_path: Path) -> None:
    """A failed label write answered 500 for good (its 0-byte .tmp broke every later read) and failed log
    writes left .part-*.parquet.tmp files forever. Now: 503 with a code while the disk is full, nothing left
    behind, and everything works again once there is space."""
    bodies = transactions(400, seed=104)
    with serving_stack(serving_home, tmp_path, {"challenger_weight": 0.3}) as s:
        with httpx.Client(timeout=10) as http:
            for b in bodies[:100]:
                assert http.post(f"{s.router.url}/predict", json=b).status_code == 200
            wait_until(lambda: s.router.log_path is not None and Path(s.predictions_url).exists(), 10, "a log file")
            limit_file_size(s.router, 0)  # the disk is full now
            try:
                label = http.post(f"{s.router.url}/feedback", headers=FEEDBACK,
                                  json={"request_id": bodies[0]["request_id"], "label": 1})
                assert label.status_code == 503 and label.json()["code"] == "label_store_unavailable", label.text
                refused = http.post(f"{s.router.url}/predict", json=bodies[100])
                assert refused.status_code == 503 and refused.json()["code"] == "prediction_log_unavailable"
                time.sleep(2.5)  # the mover tries (and fails) to write what was answered before
                metrics = http.get(f"{s.router.url}/metrics").text
            finally:
                limit_file_size(s.router, None)  # space again
            assert metric(metrics, "kingmaker_router_unavailable_total", reason="log_unavailable") == 1.0
            assert temporary_files(Path(s.labels_url)) == [] and temporary_files(Path(s.predictions_url)) == []
            label = http.post(f"{s.router.url}/feedback", headers=FEEDBACK,
                              json={"request_id": bodies[0]["request_id"], "label": 1})
            assert label.status_code == 200 and label.json()["written"] == 1
            for b in bodies[101:200]:
                assert http.post(f"{s.router.url}/predict", json=b).status_code == 200
        s.router.stop()
    answered = {b["request_id"] for b in bodies[:100] + bodies[101:200]}
    log = logs.read_predictions(s.predictions_url)
    logged = log[log["served"]]["request_id"]
    assert set(logged) == answered and logged.is_unique  # the refused one is not there, nothing twice
    assert set(log["request_id"]) <= answered  # nor as the other arm's pair
    assert logs.read_labels(s.labels_url)["request_id"].tolist() == [bodies[0]["request_id"]]
    assert temporary_files(Path(s.predictions_url)) == []


# --- 10, 11: router.yaml that is not UTF-8, or empty ------------------------------------------------------------

def test_10_11_a_broken_router_yaml_is_refused_counted_and_shown(serving_home: Path, tmp_path: Path) -> None:
    bodies = transactions(10, seed=110)
    with serving_stack(serving_home, tmp_path, {"challenger_weight": 0.3}) as s, httpx.Client(timeout=10) as http:
        def reloads(outcome: str) -> float:
            return metric(http.get(f"{s.router.url}/metrics").text, "kingmaker_router_config_reloads_total",
                          outcome=outcome)

        for i, content in enumerate((b"mode: split\nchallenger_weight: 0.5\nsalt: caf\xe9\n", b"")):
            s.config.write_bytes(content)
            time.sleep(1.2)  # the Router looks at the file once a second, on a request
            r = http.post(f"{s.router.url}/predict", json=bodies[i])
            assert r.status_code == 200, r.text  # the request that triggers the reload: it was a 500
            routing = http.post(f"{s.router.url}/routing", json={}).json()
            assert routing["config"]["challenger_weight"] == 0.3  # the last good one: an empty file reset it to 0.1
            assert routing["config_error"] and str(tmp_path) not in routing["config_error"]
            assert ("not UTF-8" if i == 0 else "is empty") in routing["config_error"]
            assert reloads("invalid") == i + 1
        s.config.write_text("mode: split\nchallenger_weight: 0.5\n")
        wait_until(lambda: http.post(f"{s.router.url}/routing", json={}).json()["config"]["challenger_weight"] == 0.5,
                   10, "the fixed file")


# --- 3: scoring auth on, the whole stack ------------------------------------------------------------------------

def test_03_the_whole_stack_serves_with_scoring_auth_on(serving_home: Path, tmp_path: Path) -> None:
    """With KINGMAKER_SCORING_TOKEN set the Router called its arms without a token, got 401 and never became
    ready. Now it sends its own (KINGMAKER_ARM_TOKEN), which the Scorers accept besides the clients'."""
    env = {"KINGMAKER_SCORING_TOKEN": "client-token", "KINGMAKER_ARM_TOKEN": "router-own-token"}
    client = {"Authorization": "Bearer client-token"}
    bodies = transactions(200, seed=103)
    # ready means the Router's /info calls to both arms were accepted
    with serving_stack(serving_home, tmp_path, {"challenger_weight": 0.5}, env=env) as s, httpx.Client(timeout=10) as http:
        assert http.post(f"{s.router.url}/predict", json=bodies[0]).status_code == 401
        answers = [http.post(f"{s.router.url}/predict", json=b, headers=client) for b in bodies]
        assert all(r.status_code == 200 for r in answers), [r.text for r in answers if r.status_code != 200][:3]
        assert {r.json()["arm"] for r in answers} == {"champion", "challenger"}
        assert not any(r.json()["fallback"] for r in answers)
        assert http.post(f"{s.champion.url}/score", json={"features": bodies[0]["features"]}).status_code == 401
        for token in ("client-token", "router-own-token"):
            r = http.post(f"{s.champion.url}/score", json={"features": bodies[0]["features"]},
                          headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200
        metrics = http.get(f"{s.router.url}/metrics").text
    assert metric(metrics, "kingmaker_router_upstream_requests_total", arm="champion", outcome="auth_error") == 0


def test_03_kingmaker_serve_with_scoring_auth(serving_home: Path, tmp_path: Path) -> None:
    import shutil
    import signal

    from .bentos_support import start_serve

    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(serving_home / "mlflow.db", home / "mlflow.db")
    proc, urls, text = start_serve(home, tmp_path, "--weight", "0.5", env={"KINGMAKER_SCORING_TOKEN": "client-token"})
    try:
        assert "Ctrl-C stops everything" in text, text
        assert "the Router's own token to its arms" in text
        assert oct((home / "serving" / "arm-token").stat().st_mode & 0o777) == "0o600"
        outcomes = asyncio.run(fire(f"{urls['router']}/predict", transactions(50, seed=113), concurrency=4))
        assert {o.status for o in outcomes} == {401}
        with httpx.Client(timeout=10, headers={"Authorization": "Bearer client-token"}) as http:
            codes = [http.post(f"{urls['router']}/predict", json=b).status_code for b in transactions(50, seed=113)]
        assert codes == [200] * 50
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert not re.search(r"exited unexpectedly", out)
