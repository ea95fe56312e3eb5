"""`kingmaker bench serving`: how fast the serving path is, against `mlflow models serve` of the same model.

One run, on this machine: a 300-tree XGBoost model is trained (``kingmaker train`` on the real data when
it is installed, else synthetic data of the same width), registered as champion and challenger, and
served by the two Scorers, the Router (split 90/10, prediction log on; pairing off and all, alternating) and
``mlflow models serve --env-manager local``. wrk sends single-row JSON at 1, 8 and 32 connections to each in
turn; then 10,000-row batches go to a Scorer (Arrow IPC and JSON) and are compared with in-process XGBoost.
Results: a printed table and ``bench-results/serving.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[{body}]==]
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'KINGMAKER {{"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""

#: The "minimal one-class BentoML service calling inplace_predict" of the issue, written the naive way:
#: no validation, no logging, defaults everywhere. Served from the work folder.
MINIMAL_SERVICE = '''
import os

import bentoml
import mlflow.xgboost
import numpy as np


@bentoml.service
class Minimal:
    def __init__(self) -> None:
        self.booster = mlflow.xgboost.load_model(os.environ["BENCH_MODEL_URI"]).get_booster()
        self.features = os.environ["BENCH_FEATURES"].split(",")

    @bentoml.api
    def predict(self, features: dict[str, float]) -> dict:
        x = np.array([[features[f] for f in self.features]], dtype=np.float32)
        return {"score": float(self.booster.inplace_predict(x)[0])}
'''

#: The issue's reference figures, measured on this kind of machine with a 300-tree model.
MINIMAL_BENTOML_RPS_AT_8 = 300.0
TARGETS = {"router_vs_mlflow_rps": 5.0, "router_vs_minimal_rps": 1.0, "router_p99_ms_at_8": 50.0,
           "router_added_p50_ms_at_1": 2.0, "batch_vs_inprocess": 0.5}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    p.add_argument("--connections", default="1,8,32", help="comma-separated wrk connection counts")
    p.add_argument("--data", choices=["auto", "creditcard", "synthetic"], default="auto",
                   help="auto: the real data if installed, else synthetic data with 30 features")
    p.add_argument("--rows", type=int, default=60_000, help="training rows (stratified sample of the real data)")
    p.add_argument("--batch-rows", type=int, default=10_000, help="rows per batch request")
    p.add_argument("--batch-requests", type=int, default=15, help="batch requests per format")
    p.add_argument("--skip-mlflow", action="store_true", help="do not benchmark mlflow models serve")
    p.add_argument("--work-dir", type=Path, help="keep models and logs here (default: a temporary folder)")
    p.add_argument("--out", type=Path, default=Path("bench-results/serving.json"), help="results file")


# --- model --------------------------------------------------------------------------------------
def _real_data_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("fraud_analysis") is not None


def _train_model(home: Path, data: str, rows: int) -> dict[str, Any]:
    """Register a 300-tree XGBoost model as @champion and the same version again as @challenger."""
    env = {**os.environ, "KINGMAKER_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    requested = data
    if data == "auto":
        data = "creditcard" if _real_data_available() else "synthetic"
    how: str
    if data == "creditcard":
        cmd = [str(Path(sys.executable).with_name("kingmaker")), "train", "--data", "creditcard", "--rows", str(rows),
               "--candidates", "xgboost", "--folds", "2", "--bootstrap", "10", "--seed", "1"]
        started = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"kingmaker train failed:\n{proc.stderr[-2000:]}")
        how = f"kingmaker train --data creditcard --rows {rows} --candidates xgboost ({time.perf_counter() - started:.0f}s)"
    else:
        _train_synthetic(home)
        how = ("synthetic, 30 features, XGBoost 300 trees depth 6"
               + (" (real data not installed)" if requested == "auto" else ""))
    from kingmaker import models
    from kingmaker.settings import MlflowSettings

    settings = MlflowSettings.from_env(home=home)
    client = settings.client()
    champion = models.resolve(client, settings.model_name, "champion")
    challenger_version, _ = models.register(client, settings.model_name, champion.run_id, alias="challenger")
    model = models.load(client, champion)
    n_trees = model.booster.num_boosted_rounds() if model.booster is not None else None
    return {"source": how, "data": data, "version": champion.version, "challenger_version": challenger_version,
            "run_id": champion.run_id,
            "n_features": len(model.features), "n_trees": n_trees, "features": list(model.features),
            "tracking_uri": settings.tracking_uri, "name": settings.model_name}


def _train_synthetic(home: Path) -> None:
    import numpy as np
    import pandas as pd
    from xgboost import XGBClassifier

    from kingmaker import models
    from kingmaker.settings import MlflowSettings

    settings = MlflowSettings.from_env(home=home)
    client = settings.client()
    exp = client.create_experiment("bench-serving", artifact_location=settings.artifact_root)
    rng = np.random.default_rng(0)
    cols = ["Time", *(f"V{i}" for i in range(1, 29)), "Amount"]
    x = pd.DataFrame(rng.standard_normal((50_000, len(cols))), columns=cols)
    y = ((x["V1"] + x["V2"] * x["V3"] + rng.normal(size=len(x))) > 2.5).astype(int)
    model = XGBClassifier(n_estimators=300, max_depth=6, learning_rate=0.05, n_jobs=2, random_state=0).fit(x, y)
    run = client.create_run(exp)
    with tempfile.TemporaryDirectory() as tmp:
        path = models.save(model, Path(tmp) / "model", flavor="xgboost", signature=models.signature(x),
                           input_example=x.head(2), threshold=0.5, features=cols)
        models.register(client, settings.model_name, run.info.run_id, path, alias="champion")
    client.set_terminated(run.info.run_id)


def _sample_rows(model: dict[str, Any], n: int) -> Any:
    """``n`` rows of real transactions (the drift reference that training logged with the model, a sample of
    its training inputs), or standard-normal rows for the synthetic model."""
    import numpy as np
    import pandas as pd

    features = model["features"]
    if model["data"] == "creditcard":
        from kingmaker import reference
        from kingmaker.settings import MlflowSettings

        client = MlflowSettings(tracking_uri=model["tracking_uri"], artifact_root="").client()
        with tempfile.TemporaryDirectory() as tmp:
            frame = reference.load(Path(client.download_artifacts(model["run_id"], reference.ARTIFACT_DIR, tmp))).sample
        frame = frame.sample(n=n, replace=n > len(frame), random_state=3).reset_index(drop=True)
        return frame[features].astype(float)
    rng = np.random.default_rng(5)
    return pd.DataFrame(rng.standard_normal((n, len(features))), columns=features)


# --- load generation ----------------------------------------------------------------------------
def _wrk(url: str, body: str, connections: int, duration: float, work: Path) -> dict[str, float]:
    script = work / "post.lua"
    script.write_text(WRK_SCRIPT.format(body=body))
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration:.0f}s", "--latency", "-s", str(script), url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("KINGMAKER ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result for {url}:\n{proc.stdout}\n{proc.stderr}")
    raw = json.loads(line.removeprefix("KINGMAKER "))
    errors = sum(raw[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    seconds = raw["duration_us"] / 1e6
    return {"connections": connections, "requests": raw["requests"], "errors": errors,
            "rps": round(raw["requests"] / seconds, 1), "p50_ms": raw["p50_us"] / 1000, "p90_ms": raw["p90_us"] / 1000,
            "p99_ms": raw["p99_us"] / 1000, "max_ms": raw["max_us"] / 1000}


def _mlflow_serve(model: dict[str, Any], port: int, home: Path, log: Path,
                  extra_env: dict[str, str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, **extra_env, "MLFLOW_TRACKING_URI": model["tracking_uri"],
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m",
           f"models:/{model['name']}/{model['version']}", "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, env=env, cwd=home, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _minimal_serve(model: dict[str, Any], port: int, work: Path, log: Path, extra_env: dict[str, str]) -> Any:
    from bentos.procs import ServiceProcess

    (work / "bench_minimal.py").write_text(MINIMAL_SERVICE)
    env = {"MLFLOW_TRACKING_URI": model["tracking_uri"], "BENCH_MODEL_URI": f"models:/{model['name']}/{model['version']}",
           "BENCH_FEATURES": ",".join(model["features"]), "BENTOML_HOME": str(work / "bentoml"),
           "PYTHONPATH": str(work), **extra_env}
    svc = ServiceProcess("minimal", "bench_minimal:Minimal", port, env, log_path=log, working_dir=work)
    svc.start()
    return svc


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 240.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not up after {timeout:.0f}s")


def _batch(scorer_url: str, model: dict[str, Any], frame: Any, requests: int) -> dict[str, Any]:
    import httpx
    import numpy as np
    import pyarrow as pa

    from kingmaker import models
    from kingmaker.settings import MlflowSettings

    client = MlflowSettings(tracking_uri=model["tracking_uri"], artifact_root="").client()
    fraud_model = models.load_uri(client, f"models:/{model['name']}/{model['version']}")
    x = frame[model["features"]].to_numpy()
    n = len(x)

    def timed(fn: Any) -> list[float]:
        fn()  # warm-up
        out = []
        for _ in range(requests):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
        return out

    inproc = timed(lambda: fraud_model.predict_proba(x))
    sink = pa.BufferOutputStream()
    table = pa.Table.from_pandas(frame[model["features"]], preserve_index=False)
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    arrow_body = sink.getvalue().to_pybytes()
    json_body = json.dumps({"rows": frame[model["features"]].to_dict(orient="records")}).encode()
    expected = fraud_model.predict_proba(x)
    results: dict[str, Any] = {"rows_per_request": n}
    with httpx.Client(base_url=scorer_url, timeout=120) as http:
        def post_arrow() -> None:
            r = http.post("/arrow/score_batch", content=arrow_body,
                          headers={"content-type": "application/vnd.apache.arrow.stream",
                                   "accept": "application/vnd.apache.arrow.stream"})
            r.raise_for_status()

        def post_json() -> None:
            http.post("/score_batch", content=json_body, headers={"content-type": "application/json"}).raise_for_status()

        check = http.post("/arrow/score_batch", content=arrow_body,
                          headers={"content-type": "application/vnd.apache.arrow.stream"}).json()
        if not np.allclose(check["scores"], expected, atol=1e-6):
            raise RuntimeError("the Scorer's batch scores differ from in-process XGBoost")
        arrow_t = timed(post_arrow)
        json_t = timed(post_json)
    for name, times in (("in_process", inproc), ("scorer_arrow", arrow_t), ("scorer_json", json_t)):
        med = statistics.median(times)
        results[name] = {"median_ms": round(med * 1000, 2), "rows_per_s": round(n / med)}
    results["arrow_vs_in_process"] = round(results["scorer_arrow"]["rows_per_s"] / results["in_process"]["rows_per_s"], 3)
    results["json_vs_in_process"] = round(results["scorer_json"]["rows_per_s"] / results["in_process"]["rows_per_s"], 3)
    results["request_mb"] = {"arrow": round(len(arrow_body) / 1e6, 2), "json": round(len(json_body) / 1e6, 2)}
    return results


def _wait_pairing(router_url: str, wanted: str, body: str, timeout: float = 10.0) -> None:
    """Until the Router has re-read router.yaml (it looks once a second, on a request) and pairs as ``wanted``."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        httpx.post(f"{router_url}/predict", content=body, headers={"content-type": "application/json"})
        if httpx.post(f"{router_url}/routing", json={}).json()["config"]["pairing"] == wanted:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Router did not switch to pairing: {wanted}")
        time.sleep(0.3)


def pair_counts(router_url: str) -> dict[str, float]:
    """The Router's ``kingmaker_router_pairs_total`` by outcome, summed over arms."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{router_url}/metrics").text):
        if family.name == "kingmaker_router_pairs":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    out[sample.labels["outcome"]] = out.get(sample.labels["outcome"], 0.0) + sample.value
    return out


# --- report -------------------------------------------------------------------------------------
def _ratios(single: dict[str, dict[int, dict[str, float]]]) -> dict[str, Any]:
    router, scorer = single.get("router", {}), single.get("scorer", {})
    out: dict[str, Any] = {}
    for other in ("mlflow", "mlflow_passive", "minimal", "minimal_passive", "scorer"):
        runs = single.get(other, {})
        if router and runs:
            out[f"router_vs_{other}_rps"] = {c: round(router[c]["rps"] / runs[c]["rps"], 2) for c in router if c in runs}
    unpaired = single.get("router_unpaired", {})
    if router and unpaired:
        out["router_paired_vs_unpaired_rps"] = {c: round(router[c]["rps"] / unpaired[c]["rps"], 2)
                                                for c in router if c in unpaired}
    if 1 in router and 1 in scorer:
        out["router_added_p50_ms_at_1"] = round(router[1]["p50_ms"] - scorer[1]["p50_ms"], 3)
    if 8 in router:
        out["router_p99_ms_at_8"] = router[8]["p99_ms"]
        out["router_vs_issue_minimal_bentoml_rps_at_8"] = round(router[8]["rps"] / MINIMAL_BENTOML_RPS_AT_8, 2)
    return out


def _table(single: dict[str, dict[int, dict[str, float]]], batch: dict[str, Any], ratios: dict[str, Any],
           pairs: dict[str, float]) -> str:
    lines = [f"{'target':<16} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}"]
    for target, runs in single.items():
        for c, r in sorted(runs.items()):
            lines.append(f"{target:<16} {c:>5} {r['rps']:>9.1f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['errors']:>7}")
    if batch:
        lines.append("")
        lines.append(f"batch of {batch['rows_per_request']:,} rows: median ms / rows per s")
        for k in ("in_process", "scorer_arrow", "scorer_json"):
            lines.append(f"  {k:<14} {batch[k]['median_ms']:>9.1f} {batch[k]['rows_per_s']:>12,}")
        lines.append(f"  Arrow vs in-process {batch['arrow_vs_in_process']:.2f}  (target >= {TARGETS['batch_vs_inprocess']})"
                     f"   JSON vs in-process {batch['json_vs_in_process']:.2f}")
    lines.append("")
    if pairs:
        lines.append("pairing during the paired Router runs (rows): " + ", ".join(f"{k} {v:.0f}" for k, v in pairs.items()))
    for key, value in ratios.items():
        goal = TARGETS.get(key)
        lines.append(f"  {key}: {value}" + (f"   (target {'<=' if 'ms' in key else '>='} {goal})" if goal else ""))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from bentos import procs
    from kingmaker.errors import PermanentError

    if shutil.which("wrk") is None:
        raise PermanentError("wrk is not installed (Debian: apt-get install wrk)")
    conns = [int(c) for c in args.connections.split(",") if c.strip()]
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="kingmaker-bench-serving-"))
    work.mkdir(parents=True, exist_ok=True)
    home = work / "home"
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"bench serving: working in {work}", flush=True)
    model = _train_model(home, args.data, args.rows)
    print(f"model: {model['source']}; {model['n_trees']} trees, {model['n_features']} features", flush=True)
    frame = _sample_rows(model, max(args.batch_rows, 1))
    one = {f: float(v) for f, v in frame.iloc[0].items()}
    env = {"KINGMAKER_HOME": str(home), "BENTOML_HOME": str(work / "bentoml"), "MLFLOW_TRACKING_URI": "",
           "KINGMAKER_FEEDBACK_TOKEN": "bench"}
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("OMP_WAIT_POLICY", None)  # "default" targets run untuned; the Scorers set it themselves
    env.pop("MLFLOW_TRACKING_URI")
    config = work / "router.yaml"
    config.write_text("mode: split\nchallenger_weight: 0.1\n")
    champion = procs.scorer("champion", f"models:/{model['name']}@champion", procs.free_port(), env=env, log_dir=logs)
    challenger = procs.scorer("challenger", f"models:/{model['name']}@challenger", procs.free_port(), env=env,
                              log_dir=logs)
    router = procs.router(procs.free_port(), champion.url, challenger.url, config=config, env=env, log_dir=logs)
    services = [champion, challenger, router]
    mlflow_proc: subprocess.Popen[bytes] | None = None
    single: dict[str, dict[int, dict[str, float]]] = {}
    batch: dict[str, Any] = {}
    pairs: dict[str, float] = {}
    load_before = os.getloadavg()
    one_body = json.dumps({"features": one})

    def run_wrk(name: str, url: str, body: str, c: int) -> None:
        single.setdefault(name, {})[c] = r = _wrk(url, body, c, args.duration, work)
        print(f"  {name:<15} c={c:<3} {r['rps']:>8.1f} req/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms"
              f"  errors {r['errors']}", flush=True)

    def measure(name: str, url: str, body: str) -> None:
        _wrk(url, body, 8, 2, work)  # warm-up, not recorded
        for c in conns:
            run_wrk(name, url, body, c)

    def measure_pairing() -> dict[str, float]:
        """The Router with pairing off and all, alternating at each connection count (so a change of the
        machine's load hits both alike); the pairing outcomes counted during the paired runs."""
        _wrk(f"{router.url}/predict", one_body, 8, 2, work)  # warm-up, not recorded
        counted: dict[str, float] = {}
        for c in conns:
            for name, pairing in (("router_unpaired", "off"), ("router", "all")):
                config.write_text(f"mode: split\nchallenger_weight: 0.1\npairing: {pairing!r}\n")
                _wait_pairing(router.url, pairing, one_body)
                before = pair_counts(router.url)
                run_wrk(name, f"{router.url}/predict", one_body, c)
                if pairing == "all":
                    time.sleep(1.0)  # the last pairing calls finish
                    for k, v in pair_counts(router.url).items():
                        counted[k] = counted.get(k, 0.0) + v - before.get(k, 0.0)
        return counted

    passive = {"OMP_WAIT_POLICY": "PASSIVE"}
    try:
        for s in services:
            s.start()
        for s in services:
            s.wait_ready()
        pairs = measure_pairing()
        measure("scorer", f"{champion.url}/score", one_body)
        for name, extra in (("minimal", {}), ("minimal_passive", passive)):
            minimal = _minimal_serve(model, procs.free_port(), work, logs / f"{name}.log", extra)
            try:
                minimal.wait_ready()
                measure(name, f"{minimal.url}/predict", one_body)
            finally:
                minimal.stop()
        if not args.skip_mlflow:
            split = json.dumps({"dataframe_split": {"columns": list(one), "data": [list(one.values())]}})
            for name, extra in (("mlflow", {}), ("mlflow_passive", passive)):
                port = procs.free_port()
                mlflow_proc = _mlflow_serve(model, port, home, logs / f"{name}.log", extra)
                try:
                    _wait_http(f"http://127.0.0.1:{port}/ping", mlflow_proc)
                    measure(name, f"http://127.0.0.1:{port}/invocations", split)
                finally:
                    os.killpg(mlflow_proc.pid, 15)
                    mlflow_proc.wait(30)
                    mlflow_proc = None
        batch = _batch(champion.url, model, frame.head(args.batch_rows), args.batch_requests)
    finally:
        if mlflow_proc is not None:
            os.killpg(mlflow_proc.pid, 9)
        for s in reversed(services):
            s.stop()
    ratios = _ratios(single)
    result = {
        "benchmark": "serving",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_average_before": [round(v, 2) for v in load_before],
                    "load_average_after": [round(v, 2) for v in os.getloadavg()]},
        "model": {k: v for k, v in model.items() if k not in ("features", "tracking_uri")},
        "wrk": {"threads": 1, "duration_s": args.duration, "body": "one row of the data, JSON"},
        "targets_measured": {
            "router": "Router /predict -> champion or challenger Scorer (split 90/10), validated and logged; the "
                      "other arm scores each answered row off the response path (pairing: all)",
            "router_unpaired": "the same Router with pairing: off (one arm scores each request)",
            "scorer": "champion Scorer /score called directly",
            "minimal": "one-class BentoML service calling inplace_predict, no validation or logging, default env",
            "minimal_passive": "the same with OMP_WAIT_POLICY=PASSIVE (as our Scorers run)",
            "mlflow": "mlflow models serve --env-manager local of the same version, default env",
            "mlflow_passive": "the same with OMP_WAIT_POLICY=PASSIVE"},
        "single_row": {t: {str(c): r for c, r in runs.items()} for t, runs in single.items()},
        "batch": batch,
        "pairing_rows_during_router_runs": pairs,
        "ratios": {k: ({str(c): v for c, v in val.items()} if isinstance(val, dict) else val) for k, val in ratios.items()},
        "targets": TARGETS,
        "reference": {"minimal_bentoml_rps_at_8": MINIMAL_BENTOML_RPS_AT_8},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print()
    print(_table(single, batch, ratios, pairs))
    print(f"\nwritten to {args.out}")
    return 0
