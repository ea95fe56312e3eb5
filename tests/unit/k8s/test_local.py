"""Local mode: the arms file (the contract with `kingmaker serve`), the router config file, the status file, the
lock and the policy file re-read on change — and a full reconcile with a crash between the alias move and the
re-pointing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8s.act import ControllerMetrics, Ports
from k8s.controller import Controller
from k8s.decide import Reason
from k8s.local import LocalLock, LocalServing, LocalStore, PolicyFile
from k8s.resource import Phase
from k8s.sources.registry import MlflowRegistry
from k8s.state import Arms, Status
from kingmaker import router_config
from kingmaker.catalog import CATALOG
from kingmaker.errors import PermanentError, TemporaryError
from kingmaker.roles import Mode
from tests.conftest import SYNTHETIC_POINT

from .conftest import MODEL, T0, Boom, Home, sources, spec, traffic_frame

NOW = T0 + 2500 + 3600 + 120


def test_arms_file_layout_and_generation(tmp_path: Path) -> None:
    serving = LocalServing(tmp_path, MODEL, clock=lambda: T0)
    assert serving.arms() == (None, 0)
    assert serving.point(Arms("1", "2")) is True
    doc = yaml.safe_load((tmp_path / "arms.yaml").read_text())
    assert doc == {"model_name": MODEL, "generation": 1, "updated": "2026-11-01T00:00:00.000000Z",
                   "arms": {"champion": {"version": "1", "model_uri": "models:/fraud-detector/1"},
                            "challenger": {"version": "2", "model_uri": "models:/fraud-detector/2"}}}
    assert serving.point(Arms("1", "2")) is False  # idempotent: no rewrite, same generation
    assert serving.point(Arms("2", None)) is True
    doc = yaml.safe_load((tmp_path / "arms.yaml").read_text())
    assert doc["generation"] == 2 and doc["arms"]["challenger"] is None
    assert serving.arms() == (Arms("2", None), 2)
    assert not list(tmp_path.glob(".*tmp"))  # written atomically


def test_router_file_keeps_keys_the_controller_does_not_own(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    router_config.dump(router_config.RouterConfig(salt="pepper", routing_field="card_id", challenger_weight=0.3), path)
    serving = LocalServing(tmp_path, MODEL)
    assert serving.route(Mode.SPLIT, 0.0) is True
    cfg = router_config.load(path)  # still valid for the Router's own parser
    assert (cfg.mode, cfg.challenger_weight, cfg.salt, cfg.routing_field) == (Mode.SPLIT, 0.0, "pepper", "card_id")
    assert serving.route(Mode.SPLIT, 0.0) is False
    assert serving.route(Mode.SHADOW, 0.1) is True and router_config.load(path).mode is Mode.SHADOW


def test_router_file_is_created_when_missing(tmp_path: Path) -> None:
    LocalServing(tmp_path / "serving", MODEL).route(Mode.SHADOW, 0.2)
    cfg = router_config.load(tmp_path / "serving" / "router.yaml")
    assert (cfg.mode, cfg.challenger_weight) == (Mode.SHADOW, 0.2)


def test_status_file_keeps_status_and_approval(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, spec(), clock=lambda: T0)
    loaded_spec, status = store.load()
    assert status == Status() and loaded_spec.approved_challenger_version is None
    store.save(Status(phase=Phase.EVALUATING, champion_version="1", challenger_version="2", looks=3))
    store.approve("2")
    loaded_spec, status = store.load()
    assert loaded_spec.approved_challenger_version == "2" and status.looks == 3
    store.save(Status(phase=Phase.PROMOTED, champion_version="2"))
    assert json.loads((tmp_path / "fraud-detector.json").read_text())["approvedChallengerVersion"] == "2"
    store.event("Normal", "Promoted", "v2 is the champion")
    assert store.events() == [{"time": "2026-11-01T00:00:00.000000Z", "type": "Normal", "reason": "Promoted",
                               "message": "v2 is the champion",
                               "regarding": {"kind": "ChampionChallenger", "name": "fraud-detector"}}]


def test_lock_excludes_a_second_process(tmp_path: Path) -> None:
    path = tmp_path / "c.lock"
    with LocalLock(path):
        code = ("import sys; from pathlib import Path; from k8s.local import LocalLock\n"
                "from kingmaker.errors import TemporaryError\n"
                f"try:\n    LocalLock(Path({str(path)!r})).acquire()\nexcept TemporaryError as e:\n"
                "    print(e); sys.exit(3)\n")
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert other.returncode == 3 and "another controller" in other.stdout
    lock = LocalLock(path)
    lock.acquire()  # free again once released
    assert lock.held
    with pytest.raises(TemporaryError):
        LocalLock(path).acquire()  # flock is per open file: a second handle in this process is refused too
    lock.release()


def test_local_promotion_crash_after_alias_move_resumes(home: Home, registry: MlflowRegistry) -> None:
    preds, labels = traffic_frame(2500, champion="1", challenger="2")
    home.write(preds, labels)
    s = spec()
    arms_path = home.root / "serving" / "arms.yaml"

    class CrashingServing(LocalServing):
        def point(self, arms: Arms) -> bool:
            if arms.champion == "2":
                raise Boom("killed between the alias move and the re-pointing")
            return super().point(arms)

    store = LocalStore(home.root / "controller", s)
    crashing = Controller(store, Ports(registry, CrashingServing(home.root / "serving", MODEL), store,
                                       ControllerMetrics()), sources(home), clock=lambda: NOW)
    with pytest.raises(Boom):
        crashing.reconcile()
    assert registry.aliases()["champion"] == "2"  # the alias moved ...
    assert yaml.safe_load(arms_path.read_text())["arms"]["champion"]["version"] == "1"  # ... the arms did not
    assert store.status().phase is Phase.PROMOTING

    store2 = LocalStore(home.root / "controller", s)  # a new process reads the file
    serving = LocalServing(home.root / "serving", MODEL)
    result = Controller(store2, Ports(registry, serving, store2, ControllerMetrics()), sources(home),
                        clock=lambda: NOW + 60).reconcile()
    assert result.resumed
    assert registry.aliases() == {"champion": "2", "previous-champion": "1"}
    assert serving.arms()[0] == Arms("2", None)
    cfg = router_config.load(serving.router_path)
    assert (cfg.mode, cfg.challenger_weight) == (Mode.SPLIT, 0.0)
    status = store2.status()
    assert status.phase is Phase.PROMOTED and [h["action"] for h in status.history] == ["Promoted"]
    assert [e["reason"] for e in store2.events()] == ["ChallengerBetter", "Promoted"]


# --- the policy file ---------------------------------------------------------------------------------

def write_policy(path: Path, *, name: str = MODEL, model: str = MODEL, mode: str = "shadow", **policy: Any) -> None:
    """A ChampionChallenger YAML (shadow mode unless told), written as editors do: a new file renamed over the old."""
    doc = {"apiVersion": "kingmaker.io/v1alpha1", "kind": "ChampionChallenger", "metadata": {"name": name},
           "spec": {"modelName": model, "traffic": {"mode": mode, "challengerWeight": 0.1},
                    "policy": {"labelDelaySeconds": 3600, "minPositivesPerArm": 10, **SYNTHETIC_POINT, **policy}}}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(doc))
    tmp.replace(path)


class Reloads:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, outcome: str, message: str) -> None:
        self.seen.append((outcome, message))


def test_policy_file_is_re_read_when_it_changes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "policy.yaml"
    write_policy(path, alpha=0.05)
    reloads = Reloads()
    policy = PolicyFile(path, default_name="x", on_reload=reloads)
    assert policy.current().policy.alpha == 0.05 and reloads.seen == []
    write_policy(path, alpha=0.01)
    assert policy.current().policy.alpha == 0.01
    assert policy.current().policy.alpha == 0.01  # unchanged file: not parsed again
    assert reloads.seen == [("ok", f"policy {path} reloaded")]

    write_policy(path, alpha=2)  # invalid: the last good policy stays
    assert policy.current().policy.alpha == 0.01
    assert policy.current().policy.alpha == 0.01
    (outcome, message), = reloads.seen[1:]  # one line per bad version of the file, not per look
    assert outcome == "invalid" and "spec.policy.alpha: must be <= 0.5, got 2" in message
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [message]

    path.write_text("spec: [unclosed")
    assert policy.current().policy.alpha == 0.01 and "cannot read policy" in reloads.seen[-1][1]
    path.unlink()
    assert policy.current().policy.alpha == 0.01 and reloads.seen[-1][0] == "invalid"
    write_policy(path, alpha=0.02)
    assert policy.current().policy.alpha == 0.02 and reloads.seen[-1][0] == "ok"


def test_policy_file_keeps_its_resource_and_model(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    write_policy(path)
    reloads = Reloads()
    policy = PolicyFile(path, default_name="x", name="override", on_reload=reloads)
    assert policy.current().name == "override"  # --name wins over metadata.name, on every read
    write_policy(path, model="other-model", alpha=0.01)
    assert policy.current().model_name == MODEL and policy.current().policy.alpha == 0.05
    assert "spec.modelName changed from 'fraud-detector' to 'other-model'" in reloads.seen[-1][1]
    write_policy(tmp_path / "bad.yaml", alpha=2)
    with pytest.raises(PermanentError, match=r"spec\.policy\.alpha: must be"):
        PolicyFile(tmp_path / "bad.yaml", default_name="x")  # a bad file at start is fatal


def test_local_mode_decides_with_the_policy_as_edited(home: Home, registry: MlflowRegistry) -> None:
    """The same process, three reconciles: a strict policy holds, the relaxed edit promotes ... and an invalid edit
    in between keeps the last good policy, counted and recorded as an Event."""
    preds, labels = traffic_frame(2500, champion="1", challenger="2")
    home.write(preds, labels)
    path = home.root / "policy.yaml"
    write_policy(path, minLabelledPerArm=5000)
    metrics = ControllerMetrics()

    def on_reload(outcome: str, message: str) -> None:
        metrics.policy_reloaded(store.name, outcome)
        if outcome == "invalid":
            store.event("Warning", "PolicyRejected", message)

    store = LocalStore(home.root / "controller", PolicyFile(path, default_name=MODEL, on_reload=on_reload))
    controller = Controller(store, Ports(registry, LocalServing(home.root / "serving", MODEL), store, metrics),
                            sources(home), clock=lambda: NOW)
    first = controller.run_once()
    assert first is not None and first.decision is not None
    assert first.decision.reason is Reason.INSUFFICIENT_SAMPLES

    write_policy(path, minLabelledPerArm="lots")
    again = controller.run_once()
    assert again is not None and again.decision is not None and again.decision.reason is Reason.INSUFFICIENT_SAMPLES
    rejected = [e for e in store.events() if e["reason"] == "PolicyRejected"]
    assert len(rejected) == 1 and "spec.policy.minLabelledPerArm: must be an integer" in rejected[0]["message"]

    write_policy(path, minLabelledPerArm=500)
    last = controller.run_once()
    assert last is not None and last.decision is not None and last.decision.reason is Reason.CHALLENGER_BETTER
    assert registry.aliases()["champion"] == "2"
    reloads = CATALOG["kingmaker_controller_policy_reloads"].exposed_name
    assert metrics.registry.get_sample_value(reloads, {"championchallenger": MODEL, "outcome": "invalid"}) == 1.0
    assert metrics.registry.get_sample_value(reloads, {"championchallenger": MODEL, "outcome": "ok"}) == 1.0


def test_local_mode_split_with_pairing_promotes_on_the_pairs(home: Home, registry: MlflowRegistry) -> None:
    """A 90/10 split where the Router paired every request: the controller compares the arms on the pairs
    and promotes, as it would in shadow mode; the recorded evidence says so."""
    preds, labels = traffic_frame(2500, champion="1", challenger="2", mode=Mode.SPLIT, weight=0.1, pairing=1.0)
    home.write(preds, labels)
    path = home.root / "policy.yaml"
    write_policy(path, mode="split", minLabelledPerArm=500)
    store = LocalStore(home.root / "controller", PolicyFile(path, default_name=MODEL))
    controller = Controller(store, Ports(registry, LocalServing(home.root / "serving", MODEL), store,
                                         ControllerMetrics()), sources(home), clock=lambda: NOW)
    result = controller.run_once()
    assert result is not None and result.decision is not None
    assert (result.decision.reason, result.decision.evidence.comparison) == (Reason.CHALLENGER_BETTER, "paired")
    assert "paired transactions" in result.decision.message
    assert registry.aliases()["champion"] == "2"
