"""`kingmaker promote` in local mode, in-process: --dry-run (table and JSON), --once, --approve."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8s.sources.registry import MlflowRegistry
from kingmaker.cli import main
from tests.conftest import SYNTHETIC_POINT

from .conftest import Home, query_api, traffic_frame
from .sources.test_drift import drift_result


@pytest.fixture
def prometheus() -> Iterator[str]:
    """A local server answering every /api/v1/query with a healthy value."""
    healthy = {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "0.002"]}]}}
    with query_api(lambda path, query: (200, healthy)) as url:
        yield url


def policy_file(home: Home, **policy: Any) -> Path:
    doc = {"apiVersion": "kingmaker.io/v1alpha1", "kind": "ChampionChallenger", "metadata": {"name": "fraud-detector"},
           "spec": {"modelName": "fraud-detector", "traffic": {"mode": "shadow", "challengerWeight": 0.2},
                    "policy": {"labelDelaySeconds": 3600, "minLabelledPerArm": 500, "minPositivesPerArm": 10,
                               **SYNTHETIC_POINT, **policy}}}
    path = home.root / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def ready(home: Home, registry: MlflowRegistry, monkeypatch: pytest.MonkeyPatch) -> Home:
    """A home with a better challenger's matured traffic and a fresh drift result for the pair."""
    monkeypatch.setenv("KINGMAKER_HOME", str(home.root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("KINGMAKER_PROMETHEUS_URL", raising=False)
    monkeypatch.delenv("KINGMAKER_DRIFT_OUTPUT_DIR", raising=False)
    preds, labels = traffic_frame(2500, champion="1", challenger="2", t0=time.time() - 4 * 3600)
    home.write(preds, labels)
    drift_result(home.root / "drift" / "run-1", created=datetime.now(UTC))
    return home


def test_dry_run_json_changes_nothing(ready: Home, registry: MlflowRegistry, prometheus: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["promote", "--dry-run", "--json", "--policy", str(policy_file(ready)), "--prometheus-url", prometheus])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["outcome"], doc["reason"], doc["would_act"]) == ("PROMOTE", "ChallengerBetter", True)
    ev = doc["evidence"]
    assert ev["champion"]["version"] == "1" and ev["challenger"]["version"] == "2"
    assert ev["champion"]["labelled"] == 2500 and ev["guardrails"]["error_rate"] == pytest.approx(0.002)
    assert ev["score_psi"] is not None and ev["difference"] < 0
    assert registry.aliases() == {"champion": "1", "challenger": "2"}
    assert not (ready.root / "controller" / "fraud-detector.json").exists()
    assert not (ready.root / "serving").exists()


def test_dry_run_table(ready: Home, prometheus: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["promote", "--dry-run", "--policy", str(policy_file(ready)), "--prometheus-url", prometheus]) == 0
    out = capsys.readouterr().out
    assert "PROMOTE (ChallengerBetter)" in out and "matured labelled" in out and "2500" in out
    assert "error rate 0.20%" in out


def test_drift_results_come_from_the_drift_jobs_output_dir(ready: Home, prometheus: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """$KINGMAKER_DRIFT_OUTPUT_DIR (kingmaker.settings.DriftSettings) is where the job writes and the controller reads."""
    shutil.rmtree(ready.root / "drift")
    drift_result(tmp_path / "shared", created=datetime.now(UTC))
    args = ["promote", "--dry-run", "--json", "--policy", str(policy_file(ready)), "--prometheus-url", prometheus]
    assert main(args) == 0
    held = json.loads(capsys.readouterr().out)
    assert (held["reason"], held["evidence"]["score_psi"]) == ("GuardrailUnavailable", None)
    monkeypatch.setenv("KINGMAKER_DRIFT_OUTPUT_DIR", str(tmp_path / "shared"))
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["reason"] == "ChallengerBetter" and doc["evidence"]["score_psi"] is not None


def test_without_prometheus_a_winner_is_held(ready: Home, registry: MlflowRegistry,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["promote", "--once", "--policy", str(policy_file(ready))]) == 0
    assert "HOLD (GuardrailUnavailable)" in capsys.readouterr().out
    assert registry.aliases()["champion"] == "1"
    status = json.loads((ready.root / "controller" / "fraud-detector.json").read_text())["status"]
    assert status["phase"] == "Evaluating" and status["looks"] == 1
    router = yaml.safe_load((ready.root / "serving" / "router.yaml").read_text())
    assert (router["mode"], router["challenger_weight"]) == ("shadow", 0.2)  # the spec's traffic while under test


def test_once_promotes(ready: Home, registry: MlflowRegistry, prometheus: str,
                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["promote", "--once", "--policy", str(policy_file(ready)), "--prometheus-url", prometheus]) == 0
    out = capsys.readouterr().out
    assert "PROMOTE (ChallengerBetter)" in out and "phase Promoted, champion v2, challenger none" in out
    assert registry.aliases() == {"champion": "2", "previous-champion": "1"}
    arms = yaml.safe_load((ready.root / "serving" / "arms.yaml").read_text())["arms"]
    assert arms["champion"]["version"] == "2" and arms["challenger"] is None
    # again: nothing to decide
    assert main(["promote", "--once", "--policy", str(policy_file(ready)), "--prometheus-url", prometheus]) == 0
    assert "phase Promoted, champion v2, challenger none" in capsys.readouterr().out


def test_manual_approval(ready: Home, registry: MlflowRegistry, prometheus: str,
                         capsys: pytest.CaptureFixture[str]) -> None:
    policy = str(policy_file(ready, approval="manual"))
    assert main(["promote", "--once", "--policy", policy, "--prometheus-url", prometheus]) == 0
    assert "awaiting approval" in capsys.readouterr().out
    assert registry.aliases()["champion"] == "1"
    status = json.loads((ready.root / "controller" / "fraud-detector.json").read_text())["status"]
    assert status["phase"] == "AwaitingApproval"
    assert main(["promote", "--approve", "--policy", policy, "--prometheus-url", prometheus]) == 0
    out = capsys.readouterr().out
    assert "approved challenger v2" in out and "phase Promoted" in out
    assert registry.aliases()["champion"] == "2"


def test_approve_refuses_without_evidence(ready: Home, registry: MlflowRegistry,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["promote", "--approve", "--policy", str(policy_file(ready, approval="manual"))])
    assert code == 1 and "not approving challenger v2" in capsys.readouterr().out  # no guardrails: HOLD
    assert registry.aliases()["champion"] == "1"


def test_bad_policy_is_one_line(ready: Home, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["promote", "--dry-run", "--policy", str(policy_file(ready, alpha=2))]) == 2
    err = capsys.readouterr().err
    assert "spec.policy.alpha" in err and "Traceback" not in err


@pytest.mark.parametrize(("flags", "message"), [
    (["--challenger-weight", "1.5"], "--mode/--challenger-weight: spec.traffic.challengerWeight: must be a number "
                                     "in [0, 1], got 1.5"),
    (["--challenger-weight", "0.2", "--policy", "x.yaml"], "--mode/--challenger-weight apply without --policy only (edit spec.traffic)"),
])
def test_bad_traffic_flags_are_one_line(ready: Home, flags: list[str], message: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["promote", "--dry-run", *flags]) == 2
    err = capsys.readouterr().err
    assert err == f"kingmaker promote: error: {message}\n"


def test_the_interval_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["promote", "--interval", "0"])
    assert "argument --interval: must be > 0, got 0" in capsys.readouterr().err


def test_defaults_without_a_policy_file(ready: Home, prometheus: str, capsys: pytest.CaptureFixture[str]) -> None:
    """CRD defaults (1000 labelled per arm, a week of label delay): the fresh traffic has not matured."""
    assert main(["promote", "--dry-run", "--json", "--mode", "shadow", "--prometheus-url", prometheus]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["outcome"], doc["reason"]) == ("HOLD", "InsufficientSamples")
    assert doc["evidence"]["champion"]["immature"] == 2500
