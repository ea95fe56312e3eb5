"""A write that fails half-way (a full disk) leaves the log as it was: no temporary file, readable by every
reader; appends under a name are idempotent (`kingmaker.logs.append`)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd

from kingmaker import logs

ROOT = Path(__file__).resolve().parents[3]


def _labels(n: int, prefix: str = "r") -> list[dict[str, object]]:
    return [{"request_id": f"{prefix}{i}", "label": i % 2, "label_ts": logs.now()} for i in range(n)]


def test_a_write_refused_by_the_kernel_leaves_no_temporary_file_and_the_log_readable(tmp_path: Path) -> None:
    """The first label write of the day fails with EFBIG (a real file-size limit on the writing process): it
    used to leave a 0-byte .part-*.parquet.tmp, and readers then failed on the empty partition for good."""
    url = str(tmp_path / "labels")
    code = textwrap.dedent(f"""
        import resource, sys
        from kingmaker import logs
        rows = [{{"request_id": f"r{{i}}", "label": 1, "label_ts": logs.now()}} for i in range(20000)]
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        try:
            logs.append_labels({url!r}, rows)
        except OSError as exc:
            print(exc)
            sys.exit(3)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3 and "File too large" in proc.stdout, proc.stderr[-2000:]
    assert [p.name for p in Path(url).rglob("*") if p.is_file()] == []  # the partition folder only
    assert logs.read_labels(url).empty  # was ArrowInvalid: No match for FieldRef.Name(label_ts)
    logs.append_labels(url, _labels(2))
    assert len(logs.read_labels(url)) == 2


def test_readers_skip_temporary_files(tmp_path: Path) -> None:
    url = str(tmp_path / "labels")
    logs.append_labels(url, _labels(3))
    day = next(Path(url).iterdir())
    (day / ".part-123.parquet.abc.tmp").write_bytes(b"PAR1 half a file")
    assert len(logs.read_labels(url)) == 3


def test_named_appends_are_idempotent(tmp_path: Path) -> None:
    url = str(tmp_path / "labels")
    rows = pd.DataFrame(_labels(5))
    assert logs.append(url, rows, logs.LABEL_SCHEMA, ts_column="label_ts", name="seg-1") == 5
    assert logs.append(url, rows, logs.LABEL_SCHEMA, ts_column="label_ts", name="seg-1") == 5  # already there
    assert len(logs.read(url, ts_column="label_ts")) == 5
    assert [p.name for p in Path(url).rglob("*.parquet")] == ["part-seg-1.parquet"]
