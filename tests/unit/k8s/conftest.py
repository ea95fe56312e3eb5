"""Builders for the controller's tests.

Pure decision tests get literal, deterministic rows and observations (no fakes, no cluster). The I/O tests get
real logs in tmp folders, a real MLflow SQLite store (copied from a session template so each test gets a fresh
one in milliseconds), and small recording ports."""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from k8s.act import ControllerMetrics, Ports
from k8s.decide import ArmRows, DriftSummary, GuardrailReadings, Observations
from k8s.kube import Kube
from k8s.local import LocalServing, LocalStore
from k8s.observe import Sources
from k8s.policy import Policy, parse_policy
from k8s.simulate import Scenario, shadow_traffic
from k8s.sources.registry import MlflowRegistry
from k8s.state import Arms, Pair, Spec, Status, Traffic
from kingmaker import logs
from kingmaker.roles import Mode
from kingmaker.settings import MlflowSettings
from tests.conftest import SYNTHETIC_POINT

from .fake_kube import NS, FakeApiServer

ROOT = Path(__file__).resolve().parents[3]
CRD = ROOT / "k8s" / "crd" / "championchallenger.yaml"
EXAMPLE = ROOT / "k8s" / "examples" / "championchallenger.yaml"

#: Every 50th transaction (index 49, 99, ...) is a fraud: a 2 % fraud rate.
FRAUD_EVERY = 50
HEALTHY = GuardrailReadings(error_rate=0.001, p99_latency_seconds=0.05)
NO_DRIFT = DriftSummary(score_psi=0.02)


def is_fraud(n: int) -> np.ndarray:
    return (np.arange(n) % FRAUD_EVERY) == FRAUD_EVERY - 1


def legit_scores(n: int) -> np.ndarray:
    """Distinct scores in [0, 0.5): each block of 500 rows holds a permutation of the same values."""
    return ((np.arange(n) * 37) % 500) / 1000.0


def scores(n: int, *, fraud_score: float) -> np.ndarray:
    """Legitimate rows get `legit_scores`; frauds get ``fraud_score`` (0.99: always caught; 0.0005: never)."""
    return np.where(is_fraud(n), fraud_score, legit_scores(n))


def arm(version: str, score: Sequence[float] | np.ndarray, *, ts: np.ndarray | None = None,
        label: np.ndarray | None = None, label_ts: np.ndarray | None = None) -> ArmRows:
    n = len(score)
    t = np.arange(n, dtype=float) if ts is None else ts
    lab = is_fraud(n).astype(float) if label is None else label
    return ArmRows.of(version, ts=t, score=score, label=lab, label_ts=label_ts,
                      request_id=[f"r{i}" for i in range(n)])


def observations(champion: ArmRows, challenger: ArmRows, *, mode: Mode = Mode.SHADOW, weight: float = 0.1,
                 now: float | None = None, guardrails: GuardrailReadings = HEALTHY,
                 drift: DriftSummary | None = NO_DRIFT) -> Observations:
    last = max(float(champion.ts.max(initial=0.0)), float(challenger.ts.max(initial=0.0)))
    return Observations(now=last if now is None else now, mode=mode, challenger_weight=weight,
                        champion=champion, challenger=challenger, guardrails=guardrails, drift=drift)




def policy(**spec: object) -> Policy:
    """A policy from CRD-style keys; label delay 0 unless given, so every row has matured."""
    return parse_policy({"labelDelaySeconds": 0, **SYNTHETIC_POINT, **spec})


@pytest.fixture(scope="session")
def crd() -> dict:
    return yaml.safe_load(CRD.read_text())


@pytest.fixture(scope="session")
def example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


# --- I/O builders: logs, MLflow, recording ports ------------------------------------------------------

MODEL = "fraud-detector"
T0 = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
FEATURES = ("amount", "f1")


def spec(**policy: Any) -> Spec:
    """A spec with a small, fast policy (label delay 1 h unless given) in shadow mode."""
    raw = {"labelDelaySeconds": 3600, "minLabelledPerArm": 500, "minPositivesPerArm": 10, **SYNTHETIC_POINT, **policy}
    return Spec(name=MODEL, model_name=MODEL, policy=parse_policy(raw), traffic=Traffic(0.1, Mode.SHADOW))


def traffic_frame(n: int, *, champion: str, challenger: str, mode: Mode = Mode.SHADOW,
                  separations: tuple[float, float] = (1.0, 3.5), seed: int = 1, t0: float = T0,
                  weight: float = 0.5, pairing: float = 0.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Prediction rows and label rows for ``n`` requests (k8s.simulate's scores: separation = quality).

    Shadow: every request on both arms. Split: each request answered by one arm (challenger with
    ``weight``); a share ``pairing`` of requests is also scored by the other arm (``served`` False), logged
    a millisecond later, as the Router's pairing does. Labels arrive 60 s after the request.
    """
    rng = np.random.default_rng(seed)
    traffic = shadow_traffic(Scenario(champion_separation=separations[0], challenger_separation=separations[1]),
                             n, 1, rng)
    ids = np.array([f"s{seed}-r{i}" for i in range(n)])
    ts = t0 + np.arange(n, dtype=float)
    labels = traffic.champion.labels[0]
    amount = traffic.champion.amounts[0]
    rows = []
    to_challenger = rng.random(n) < weight
    paired = rng.random(n) < pairing if pairing else np.zeros(n, bool)
    for arm, version, scores in (("champion", champion, traffic.champion.scores[0]),
                                 ("challenger", challenger, traffic.challenger.scores[0])):
        own = np.ones(n, bool) if mode is Mode.SHADOW else (to_challenger if arm == "challenger" else ~to_challenger)
        keep = own | paired
        served = own[keep] & (arm == "champion" or mode is Mode.SPLIT)
        rows.append(pd.DataFrame({
            "request_id": ids[keep], "ts": pd.to_datetime(ts[keep] + 0.001 * ~own[keep], unit="s", utc=True),
            "routing_key": ids[keep],
            "arm": arm, "served": served, "mode": mode.value, "model_name": MODEL,
            "model_version": version, "score": scores[keep], "decision": scores[keep] > 0.5, "threshold": 0.5,
            "latency_ms": 2.0, "feat_amount": amount[keep], "feat_f1": rng.standard_normal(int(keep.sum())),
        }))
    preds = pd.concat(rows, ignore_index=True)
    label_rows = pd.DataFrame({"request_id": ids, "label": labels.astype(np.int8),
                               "label_ts": pd.to_datetime(ts + 60.0, unit="s", utc=True)})
    return preds, label_rows


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def predictions(self) -> str:
        return str(self.root / "logs" / "predictions")

    @property
    def labels(self) -> str:
        return str(self.root / "logs" / "labels")

    @property
    def mlflow(self) -> MlflowSettings:
        return MlflowSettings.from_env(home=self.root, tracking_uri=f"sqlite:///{self.root}/mlflow.db")

    def write(self, preds: pd.DataFrame, labels: pd.DataFrame | None = None) -> None:
        logs.append_predictions(self.predictions, preds, FEATURES)
        if labels is not None:
            logs.append_labels(self.labels, labels)


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path)


@pytest.fixture(scope="session")
def _mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite store with fraud-detector v1 (@champion), v2 (@challenger) and v3, made once."""
    root = tmp_path_factory.mktemp("mlflow-template")
    client = MlflowSettings.from_env(home=root, tracking_uri=f"sqlite:///{root}/mlflow.db").client()
    client.create_registered_model(MODEL)
    for i in range(3):
        client.create_model_version(MODEL, source=str(root / f"model-{i + 1}"))
    client.set_registered_model_alias(MODEL, "champion", "1")
    client.set_registered_model_alias(MODEL, "challenger", "2")
    return root / "mlflow.db"


@pytest.fixture
def registry(home: Home, _mlflow_template: Path) -> MlflowRegistry:
    """A fresh copy of the template store: v1 @champion, v2 @challenger, v3 unaliased."""
    shutil.copy(_mlflow_template, home.root / "mlflow.db")
    return MlflowRegistry(home.mlflow.client(), MODEL)


# --- recording ports ----------------------------------------------------------------------------------

class Boom(RuntimeError):
    """A simulated crash (the process dies here)."""


@dataclass
class RecordingServing:
    """`ServingTarget` that remembers the last configuration; raises `Boom` when ``fail_when(call, arg)``."""

    arms: Arms | None = None
    mode: Mode | None = None
    weight: float | None = None
    calls: list[tuple[str, Any]] = field(default_factory=list)
    fail_when: Callable[[str, Any], bool] = field(default=lambda call, arg: False)

    def point(self, arms: Arms) -> bool:
        self.calls.append(("point", arms))
        if self.fail_when("point", arms):
            raise Boom("crash while re-pointing the arms")
        changed = arms != self.arms
        self.arms = arms
        return changed

    def route(self, mode: Mode, challenger_weight: float) -> bool:
        self.calls.append(("route", (mode, challenger_weight)))
        if self.fail_when("route", (mode, challenger_weight)):
            raise Boom("crash while routing")
        changed = (mode, challenger_weight) != (self.mode, self.weight)
        self.mode, self.weight = mode, challenger_weight
        return changed


@dataclass
class MemoryStore:
    """`ResourceSource` + `StatusStore` in memory: every saved status and event is kept."""

    spec: Spec
    current: Status = field(default_factory=Status)
    saved: list[Status] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    def load(self) -> tuple[Spec, Status]:
        return self.spec, self.current

    def status(self) -> Status:
        return self.current

    def save(self, status: Status) -> None:
        self.saved.append(status)
        self.current = status

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))


@dataclass(frozen=True)
class Fixed:
    """Sources that hand in literal values."""

    guard: GuardrailReadings = HEALTHY
    psi: float | None = 0.02

    def readings(self, pair: Pair) -> GuardrailReadings:
        return self.guard

    def latest(self, pair: Pair, now: float) -> DriftSummary | None:
        return DriftSummary(score_psi=self.psi)


def sources(home: Home, fixed: Fixed | None = None) -> Sources:
    from k8s.sources.logs import LogWindows

    f = fixed or Fixed()
    return Sources(LogWindows(home.predictions, home.labels), f, f)


@pytest.fixture
def local_ports(home: Home, registry: MlflowRegistry) -> Iterator[tuple[Ports, LocalStore, LocalServing]]:
    s = spec()
    store = LocalStore(home.root / "controller", s)
    serving = LocalServing(home.root / "serving", MODEL)
    yield Ports(registry, serving, store, ControllerMetrics()), store, serving


@pytest.fixture
def kube(server: FakeApiServer) -> Iterator[Kube]:
    """The Kubernetes adapter on the test module's recording fake API server (its ``server`` fixture)."""
    k = Kube(server.api_client(), NS, timeout=3.0)
    yield k
    k.api_client.close()


@contextlib.contextmanager
def query_api(answer: Callable[[str, str], tuple[int, Any]]) -> Iterator[str]:
    """A real local HTTP server: ``answer(path, promql)`` -> (status, JSON document) for every GET."""
    from urllib.parse import parse_qs, urlparse

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlparse(self.path)
            status, doc = answer(url.path, parse_qs(url.query).get("query", [""])[0])
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
