"""`kingmaker demo --fast` (the README's main command, shortened for CI) end to end on the real data, with the real
stack: the report and the decision record it leaves, the report as a browser shows it (headless Chromium, no
console error), and every shell command of the README's marked sections against the stack it keeps serving."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kingmaker import demo_report
from tests.conftest import ROOT

# the module fixture trains both models and runs the whole loop: minutes on 2 busy cores, over the default 900 s
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

#: README sections whose fenced ``bash`` blocks must run as written against the demo's stack.
README_MARK = re.compile(r"<!-- runs-against-demo -->(.*?)<!-- /runs-against-demo -->", re.S)
#: What Chromium logs for a console message (any level) or an uncaught exception. The report has no script, so
#: any console line is an error (a blocked load, a bad inline resource ...).
CONSOLE_ERROR = re.compile(r":CONSOLE[:(]|Uncaught")


@dataclass
class Demo:
    cwd: Path  # where the demo ran: ./.kingmaker is its home
    output: str
    router: str
    proc: subprocess.Popen[str]
    env: dict[str, str]  # a user's: no KINGMAKER_* settings, .venv/bin first on PATH

    @property
    def home(self) -> Path:
        return self.cwd / ".kingmaker"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """`kingmaker demo --fast --keep-serving` as a user runs it (home ./.kingmaker), until its stack serves."""
    cwd = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KINGMAKER_", "MLFLOW_TRACKING"))}
    env["BENTOML_HOME"] = str(cwd / "bentoml")
    (cwd / ".venv").symlink_to(Path(sys.executable).parents[1])  # the README says .venv/bin/kingmaker
    env["PATH"] = f"{cwd / '.venv' / 'bin'}:{env['PATH']}"
    exe = Path(sys.executable).with_name("kingmaker")
    proc = subprocess.Popen([str(exe), "demo", "--fast", "--port", "0", "--keep-serving"], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line)
        if "the stack keeps serving at" in line:
            break
    output = "".join(lines)
    found = re.search(r"the stack keeps serving at (http://[\d.:]+)", output)
    if found is None:
        proc.wait(timeout=60)
        pytest.fail(f"kingmaker demo --fast exited {proc.returncode} before serving:\n{output[-4000:]}")
    try:
        yield Demo(cwd, output, found.group(1), proc, env)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=240)


def test_the_fast_demo_writes_a_report_and_a_decision_record(demo: Demo) -> None:
    record = json.loads((demo.home / "demo" / "decision.json").read_text())
    assert record["requests"]["sent"] == record["data"]["replay_rows"] == 20_000
    assert record["requests"]["failed"] == 0, record["requests"]["errors"]
    assert record["requests"]["labels_sent"] == 20_000
    assert record["data"]["train_rows"] == 20_000 and record["data"]["replay_frauds"] > 0
    assert record["candidates"][record["champion_version"]] == "logreg"
    policy = record["policy"]["spec"]["policy"]
    assert (policy["alertRate"], policy["cost"]) == (0.003, {"reviewCost": 5.0, "missedFraudCost": 100.0})
    last = record["status"]["lastEvaluation"]
    assert last["outcome"] in {"HOLD", "PROMOTE", "ROLLBACK"} and last["message"]
    assert len(record["trace"]) >= 3  # the controller looked while the traffic flowed, and after
    assert record["missing"] == []  # Prometheus and the Pushgateway ran (.ci/test installs them)
    assert record["latency"] and all(v["p99"] > 0 for v in record["latency"].values())
    assert record["drift_dir"] and (Path(record["drift_dir"]) / "drift.json").exists()
    assert "failed requests: 0 of 20,000" in demo.output

    report = (demo.home / "demo" / "report.html").read_text()
    assert f"{record['status']['lastEvaluation']['reason']}" in report
    assert "What happened" in report and "The policy, fixed before measuring" in report
    tested = bool(demo_report.evidence_series(record["trace"])[0])  # a look with a test statistic: its plot
    assert report.count('src="data:image/png;base64,') == 3 + tested  # requests per arm, PR curves, drift
    assert not re.search(r"(src|href)=\"(?!data:)", report), "the report must not load anything"
    held = last["outcome"] != "PROMOTE"
    assert ("HELD" in report or "ROLLED BACK" in report) if held else "PROMOTED" in report


def _console_errors(page: Path, screenshot: Path) -> str:
    """Opens ``page`` in headless Chromium, saves a screenshot, returns the console errors Chromium logged."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed (apt-get install chromium; .ci/test does)")
    proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--enable-logging=stderr", "--v=0", "--window-size=1200,3200",
                           f"--screenshot={screenshot}", page.as_uri()],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return "\n".join(line for line in proc.stderr.splitlines() if CONSOLE_ERROR.search(line))


def test_the_report_opens_in_a_browser_without_console_errors(demo: Demo, tmp_path: Path) -> None:
    broken = tmp_path / "broken.html"  # the check itself: a page with a script error must be caught
    broken.write_text("<!doctype html><title>x</title><script>console.error('boom'); undefinedCall();</script>")
    assert "boom" in _console_errors(broken, tmp_path / "broken.png")

    screenshot = tmp_path / "demo-report.png"
    assert _console_errors(demo.home / "demo" / "report.html", screenshot) == ""
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 50_000


def readme_commands(text: str) -> list[str]:
    """The shell commands of the fenced bash blocks inside the README's marked sections: one per line, with
    backslash continuations joined and comments dropped."""
    commands: list[str] = []
    for section in README_MARK.findall(text):
        for block in re.findall(r"```bash\n(.*?)```", section, re.S):
            for command in block.replace("\\\n", " ").splitlines():
                stripped = command.strip()
                if stripped and not stripped.startswith("#"):
                    commands.append(stripped)
    return commands


def test_readme_commands_parse_the_marked_sections_only() -> None:
    text = ("```bash\nnot this\n```\n<!-- runs-against-demo -->\n```bash\n# a comment\ncurl -s a \\\n  -d b\n"
            "echo two\n```\n```yaml\nno: 1\n```\n<!-- /runs-against-demo -->\n")
    assert readme_commands(text) == ["curl -s a    -d b", "echo two"]


def test_every_readme_command_runs_against_the_demo_stack(demo: Demo) -> None:
    commands = readme_commands((ROOT / "README.md").read_text())
    assert commands, "README.md has no <!-- runs-against-demo --> section with a ```bash block"
    port = demo.router.rsplit(":", 1)[1]
    failures: list[str] = []
    for command in commands:
        # the README's port is 3000; this test's demo serves on a free port (others may hold 3000). Every curl of
        # the line fails on a non-2xx answer, and so does every command of a list or pipeline.
        line = command.replace("localhost:3000", f"127.0.0.1:{port}")
        script = f'set -e -o pipefail\ncurl() {{ command curl --fail-with-body "$@"; }}\n{line}\n'
        proc = subprocess.run(["bash", "-c", script], cwd=demo.cwd, capture_output=True, text=True, timeout=300,
                              env=demo.env)
        if proc.returncode != 0:
            failures.append(f"{shlex.quote(command)} -> exit {proc.returncode}: {(proc.stdout + proc.stderr)[-500:]}")
    assert failures == [], "\n".join(failures)
