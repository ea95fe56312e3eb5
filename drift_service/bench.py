"""`kingmaker bench drift`: how fast the drift analysis is, and how its time grows with the window.

The target (issue 4): **1,000,000 rows x 30 features against a 100,000-row reference in <= 5 s on
2 cores**. Synthetic normal features (two of them shifted by 0.5 SD so the drift paths run too) and a
90/10 champion/challenger split with scores are analysed exactly as the job does it (feature PSI + KS
with BH correction, per-arm score drift, arm vs arm, report histograms). For each window size the
median of ``--repeat`` runs is reported; with ``--with-io`` the window is also written to a Parquet
prediction log and the time to read it back by time span (`drift_service.window.load`, the CronJob's
default) is measured separately.
Rendering the HTML report is timed once, on the largest window.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any


def _rows_list(text: str) -> list[int]:
    try:
        rows = [int(float(v)) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"comma-separated row counts expected: {text!r}") from exc
    if not rows or min(rows) < 1:
        raise argparse.ArgumentTypeError("row counts must be positive")
    return sorted(rows)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", type=_rows_list, default=[10_000, 100_000, 1_000_000],
                   help="comma-separated window sizes; the largest is checked against the target")
    p.add_argument("--features", type=int, default=30, help="number of features")
    p.add_argument("--reference-rows", type=int, default=100_000, help="rows in the reference sample")
    p.add_argument("--repeat", type=int, default=3, help="runs per size (the median is reported)")
    p.add_argument("--workers", type=int, default=None, help="threads for per-feature work (default: CPUs, max 4)")
    p.add_argument("--target-seconds", type=float, default=5.0, help="budget for the largest window")
    p.add_argument("--with-io", action="store_true", help="also time reading the window from a Parquet log")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench-results/drift.json"), help="where to write the numbers")


def _data(rows: int, features: int, reference_rows: int, seed: int) -> tuple[Any, Any, list[str]]:
    import numpy as np
    import pandas as pd

    from kingmaker import reference

    rng = np.random.default_rng(seed)
    names = [f"x{i:02d}" for i in range(features)]
    ref_x = pd.DataFrame(rng.standard_normal((reference_rows, features)), columns=names)
    ref = reference.build(ref_x, rng.beta(1, 20, reference_rows), names)
    cur = rng.standard_normal((rows, features))
    cur[:, :2] += 0.5  # two drifted features
    challenger = rng.random(rows) < 0.1
    frame = pd.DataFrame({f"feat_{n}": cur[:, i] for i, n in enumerate(names)})
    frame.insert(0, "arm", np.where(challenger, "challenger", "champion"))
    frame.insert(1, "served", True)
    frame.insert(2, "model_version", np.where(challenger, "2", "1"))
    frame.insert(3, "score", np.where(challenger, rng.beta(1.2, 20, rows), rng.beta(1, 20, rows)))
    return ref, frame, names


def _log_frame(frame: Any, seed: int) -> Any:
    import numpy as np
    import pandas as pd

    n = len(frame)
    rng = np.random.default_rng(seed)
    out = frame.copy()
    out["request_id"] = pd.RangeIndex(n).astype(str)
    start = pd.Timestamp("2026-01-01T00:00")  # naive UTC, microseconds: the log's timestamp type
    out["ts"] = (start + pd.to_timedelta(np.sort(rng.uniform(0, 3600, n)), unit="s")).astype("datetime64[us]")
    out["routing_key"] = None
    out["mode"] = "split"
    out["model_name"] = "fraud-detector"
    out["decision"] = out["score"] > 0.5
    out["threshold"] = 0.5
    out["latency_ms"] = 1.0
    return out


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm.auto import tqdm

    from drift_service import report, window
    from drift_service.analysis import ArmReference, Policy, Window, analyse
    from kingmaker.drift_result import Context
    from kingmaker.logs import append_predictions
    from kingmaker.roles import Arm

    policy = Policy()
    table: list[dict[str, Any]] = []
    largest = max(args.rows)
    report_seconds = None
    for rows in tqdm(args.rows, desc="window sizes", unit="size"):
        ref, frame, names = _data(rows, args.features, args.reference_rows, args.seed)
        arms = (ArmReference(Arm.CHAMPION, "1", ref), ArmReference(Arm.CHALLENGER, "2", ref))
        win = Window(frame=frame, since=None, until=None, source="memory")
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            result = analyse(win, ref, arms, policy, workers=args.workers)
            times.append(time.perf_counter() - t0)
        row: dict[str, Any] = {"rows": rows, "features": args.features, "reference_rows": args.reference_rows,
                               "analyse_seconds_median": statistics.median(times),
                               "analyse_seconds_min": min(times), "runs": args.repeat,
                               "rows_per_second": rows / statistics.median(times),
                               "severity": result.severity.value,
                               "drifted_features": list(result.drifted_features)}
        if args.with_io:
            with tempfile.TemporaryDirectory(prefix="kingmaker-bench-") as tmp:
                log_frame = _log_frame(frame, args.seed)
                append_predictions(tmp, log_frame, names)
                del log_frame
                t0 = time.perf_counter()
                loaded = window.load(tmp, names, until=datetime(2026, 1, 2, tzinfo=UTC), window=timedelta(days=1))
                row["read_seconds"] = time.perf_counter() - t0
                del loaded
        if rows == largest:
            t0 = time.perf_counter()
            report.render(result, Context("fraud-detector", "1", "2", "bench", "memory", None, None,
                                          datetime.now(UTC)))
            report_seconds = time.perf_counter() - t0
        table.append(row)
        del frame
    biggest = table[-1]
    passed = biggest["analyse_seconds_median"] <= args.target_seconds
    doc = {
        "benchmark": "drift", "target": {"rows": largest, "features": args.features,
                                         "reference_rows": args.reference_rows, "seconds": args.target_seconds},
        "passed": passed, "report_render_seconds": report_seconds,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "numpy": np.__version__, "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024},
        "results": table,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1))
    io_head = f" {'read s':>8}" if args.with_io else ""
    print(f"\n{'rows':>10} {'features':>8} {'ref rows':>9} {'analyse s':>10} {'rows/s':>12}{io_head}")
    for r in table:
        io_cell = f" {r['read_seconds']:8.2f}" if args.with_io else ""
        print(f"{r['rows']:>10,} {r['features']:>8} {r['reference_rows']:>9,} {r['analyse_seconds_median']:>10.3f} "
              f"{r['rows_per_second']:>12,.0f}{io_cell}")
    if report_seconds is not None:
        print(f"HTML report for {largest:,} rows rendered in {report_seconds:.2f} s")
    verdict = "PASS" if passed else "FAIL"
    print(f"{verdict}: {largest:,} rows x {args.features} features vs {args.reference_rows:,} reference rows in "
          f"{biggest['analyse_seconds_median']:.2f} s (target <= {args.target_seconds:g} s, {os.cpu_count()} CPUs)")
    print(f"results written to {args.out}")
    return 0 if passed else 1
