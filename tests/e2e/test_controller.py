"""The promotion controller on the real control plane: `kingmaker promote --kubernetes` as separate processes,
with the chart's own arguments and settings, authenticated by the chart's ServiceAccount token (TokenRequest,
never the admin), acting on what `helm install` made.

The evidence is real too: an MLflow registry (SQLite) with fraud-detector v1 @champion and v2 @challenger,
prediction and label logs in which the challenger clearly wins (shadow traffic, labels matured), a real
Prometheus scraping the Router's guardrail series (a metrics endpoint of the catalog's names) and a real
Pushgateway holding the gauges the real drift job (`kingmaker drift`) pushed — the controller reads guardrails
and drift through Prometheus exactly as the chart configures it (``--drift-from-prometheus``).

What it proves, against the API server:
- a promotion: both colours' champion Deployments patched and rolled (new ReplicaSet Ready, old scaled to 0),
  the router ConfigMap updated, status conditions and history, ``events.k8s.io`` Events, the Lease held;
- SIGKILLed between the alias move and the re-pointing (the ``after-alias-move`` failpoint), the restarted
  controller finishes the swap and everything ends consistent, decided once;
- two replicas: exactly one acts; the other takes over when the leader dies;
- a status write that meets a concurrent edit (409) is re-read and retried;
- a spec change (a traffic edit, an approval) is acted on within seconds: the controller watches;
- every call of the controller succeeds under the chart's Role; approving is not among them.

Where this differs from a pod: the process runs on the test machine with the ServiceAccount token in a
kubeconfig instead of a projected token, MLflow is reached as a SQLite file instead of the tracking server URL
in the settings ConfigMap (the other settings are the ConfigMap's), and nothing scores: kwok's pods run no
container, so "rolled" means the Deployment controller's ReplicaSets and kwok's Ready pods.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from kubernetes import client

from k8s.kube import Gone, Kube, NotFound
from k8s.sources.drift import PrometheusDrift
from k8s.sources.prometheus import GuardrailQueries, PrometheusAPI, PrometheusGuardrails
from k8s.state import Pair
from k8s.watch import ResourceWatch
from kingmaker import reference
from kingmaker.errors import PermanentError
from kingmaker.settings import MlflowSettings
from tests.conftest import SYNTHETIC_POINT, kingmaker
from tests.e2e.chart import RELEASE, helm_upgrade, rolled_out
from tests.e2e.cluster import ControlPlane
from tests.integration.bentos_support import write_matured_traffic
from tests.integration.prometheus_support import FakeRouter, prometheus, pushgateway

pytestmark = pytest.mark.e2e

MODEL = CC = "fraud-detector"  # the chart's model.name and championChallenger.name
CONTROLLER = f"{RELEASE}-controller"  # the chart's ServiceAccount, Lease and Deployment
GROUP, VERSION, PLURAL = "kingmaker.io", "v1alpha1", "championchallengers"
COLOURS = ("blue", "green")


# --- the evidence: registry, logs, Prometheus with guardrails and drift ---------------------------------

@dataclass(frozen=True)
class Evidence:
    root: Path  # logs/, the template mlflow.db and its artifacts
    prometheus: str
    pushgateway: str

    def home(self, folder: Path) -> Path:
        """A KINGMAKER_HOME of its own (the registry copied: promotions move its aliases)."""
        folder.mkdir(parents=True)
        shutil.copy(self.root / "mlflow.db", folder / "mlflow.db")
        return folder


def _registry(root: Path) -> Any:
    return MlflowSettings.from_env(home=root, tracking_uri=f"sqlite:///{root}/mlflow.db").client()


@pytest.fixture(scope="module")
def evidence(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Evidence]:
    from training.data import synthetic

    root = tmp_path_factory.mktemp("evidence")
    write_matured_traffic(str(root / "logs" / "predictions"), str(root / "logs" / "labels"), champion="1",
                          challenger="2", better=True)
    # Each version as training leaves it (the controller moves aliases and tags versions, it never loads a model;
    # the drift job reads the version's run's drift_reference/): training rows and the version's scores on them,
    # scored the way write_matured_traffic scores each arm (separation 1.0 for v1, 3.5 for v2).
    train = synthetic(rows=4000, seed=3, fraud_rate=0.02)
    rng = np.random.default_rng(3)
    mlflow = _registry(root)
    experiment = mlflow.create_experiment("training", artifact_location=str(root / "mlartifacts"))
    mlflow.create_registered_model(MODEL)
    for version, separation in (("1", 1.0), ("2", 3.5)):
        latent = separation * train.y.astype(float) + rng.standard_normal(len(train.frame))
        scores = 1.0 / (1.0 + np.exp(-(latent - 4.0)))
        folder = reference.save(reference.build(train.frame, scores, list(train.features)),
                                root / f"reference-{version}")
        run = mlflow.create_run(experiment).info.run_id
        mlflow.log_artifacts(run, str(folder), reference.ARTIFACT_DIR)
        mlflow.set_terminated(run)
        assert mlflow.create_model_version(MODEL, source=f"runs:/{run}/model", run_id=run).version == int(version)
    mlflow.set_registered_model_alias(MODEL, "champion", "1")
    mlflow.set_registered_model_alias(MODEL, "challenger", "2")

    with pushgateway(root) as gateway, FakeRouter(error_share=0.005, latency=0.02) as router:
        config = {"global": {"scrape_interval": "1s"}, "scrape_configs": [
            {"job_name": "router", "static_configs": [{"targets": [f"127.0.0.1:{router.port}"]}]},
            {"job_name": "pushgateway", "honor_labels": True,
             "static_configs": [{"targets": [gateway.removeprefix("http://")]}]}]}
        (root / "prometheus").mkdir()
        with prometheus(root / "prometheus", config) as url:
            kingmaker("drift", "--window", "6h", "--no-mlflow-log", "--output-dir", str(root / "drift"),
                      "--pushgateway", gateway, home=root, timeout=300,
                      env={"KINGMAKER_PREDICTIONS_URL": str(root / "logs" / "predictions")})
            api = PrometheusAPI(url, timeout=5.0)
            pair, deadline = Pair("1", "2"), time.monotonic() + 60
            # what the controller will read, read the same way: healthy guardrails, a fresh arm-vs-arm PSI
            while True:
                drift = PrometheusDrift(api).latest(pair, time.time())
                guardrails = PrometheusGuardrails(api, GuardrailQueries("10m")).readings(pair)
                if drift is not None and drift.score_psi is not None and guardrails.p99_latency_seconds is not None:
                    break
                assert time.monotonic() < deadline, f"Prometheus: no guardrails or drift yet ({guardrails}, {drift})"
                time.sleep(0.5)
            api.close()
            yield Evidence(root, url, gateway)


def _values(evidence: Evidence, approval: str) -> dict[str, Any]:
    """Both colours running (the controller must move both), stores and Prometheus of this machine, a policy
    the evidence satisfies, re-evaluated only hourly: anything faster is the watch."""
    return {
        "images": {"tag": "0.1.0"}, "green": {"enabled": True, "image": {"tag": "0.1.0"}},
        "drift": {"enabled": False},
        "championChallenger": {
            "traffic": {"mode": "shadow", "challengerWeight": 0.1, "routingKey": "customer_id"},
            "policy": {"labelDelaySeconds": 3600, "minLabelledPerArm": 1000, "minPositivesPerArm": 15,
                       "evaluationIntervalSeconds": 3600, "approval": approval, **SYNTHETIC_POINT}},
        "objectStore": {"predictionsUrl": str(evidence.root / "logs" / "predictions"),
                        "labelsUrl": str(evidence.root / "logs" / "labels")},
        "prometheus": {"url": evidence.prometheus},
        "pushgateway": {"url": evidence.pushgateway},
    }


def install(cluster: ControlPlane, namespace: str, evidence: Evidence, folder: Path, *, approval: str) -> None:
    values = folder / "values.yaml"
    values.write_text(yaml.safe_dump(_values(evidence, approval)))
    helm_upgrade(cluster, namespace, values=(values,))


# --- the controller as a process -------------------------------------------------------------------------

class ControllerProcess:
    """`kingmaker promote` with the arguments of the chart's controller Deployment, the settings ConfigMap as
    environment (MLflow aside) and a kubeconfig holding the chart ServiceAccount's token."""

    def __init__(self, cluster: ControlPlane, namespace: str, home: Path, identity: str, *,
                 extra: tuple[str, ...] = (), env: dict[str, str] | None = None):
        self.identity = identity
        self.log_path = home / f"{identity}.log"
        with cluster.api_client() as api:
            deployment = client.AppsV1Api(api).read_namespaced_deployment(CONTROLLER, namespace)
            settings = client.CoreV1Api(api).read_namespaced_config_map(f"{RELEASE}-settings", namespace).data
        (container,) = deployment.spec.template.spec.containers
        args = list(container.args)
        args[args.index("--metrics-port") + 1] = "0"  # no server: two of them run on this machine
        token = cluster.service_account_token(namespace, deployment.spec.template.spec.service_account_name)
        kubeconfig = cluster.write_kubeconfig(home / f"{identity}.kubeconfig", token, namespace)
        base = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "MLFLOW_TRACKING_URI")}
        pod_only = ("MLFLOW_TRACKING_URI", "HOME", "MPLCONFIGDIR")  # a tracking server URL, the pod's own dirs
        self.env = {**base, **{k: v for k, v in settings.items() if k not in pod_only},
                    "KINGMAKER_HOME": str(home), "KUBECONFIG": str(kubeconfig), **(env or {})}
        self.args = [*container.command, *args, "--identity", identity, *extra]
        exe = Path(sys.executable).with_name(self.args[0])
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen([str(exe), *self.args[1:]], env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=60)
        finally:
            self._log.close()


@contextlib.contextmanager
def controllers(*procs: ControllerProcess) -> Iterator[None]:
    """Stops the processes at the end, whatever happened; a failure shows their logs."""
    try:
        yield
    except BaseException:
        for p in procs:
            print(f"--- {p.identity} ({p.log_path}) ---\n{p.log()[-6000:]}")
        raise
    finally:
        for p in procs:
            p.stop(signal.SIGKILL)


# --- reading the cluster -----------------------------------------------------------------------------------

def resource(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    return dict(client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, CC))


def router_yaml(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    cm = client.CoreV1Api(api).read_namespaced_config_map(f"{CC}-router", namespace)
    return dict(yaml.safe_load(cm.data["router.yaml"]))


def arm_deployments(api: client.ApiClient, namespace: str, arm: str) -> list[client.V1Deployment]:
    """The controller's own way: by label, every colour."""
    return list(client.AppsV1Api(api).list_namespaced_deployment(
        namespace, label_selector=f"kingmaker.io/championchallenger={CC},kingmaker.io/arm={arm}").items)


def serves(deployment: client.V1Deployment) -> tuple[str, str | None]:
    template = deployment.spec.template
    (scorer,) = [c for c in template.spec.containers if c.name == "scorer"]
    uri = next(e.value for e in scorer.env if e.name == "KINGMAKER_MODEL_URI")
    return uri, (template.metadata.annotations or {}).get("kingmaker.io/model-version")


def events(api: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    """The ``events.k8s.io`` Events about the ChampionChallenger, oldest first. Read as JSON: the namespace also
    holds the Deployment controller's Events, which have no eventTime, and the client's model requires one."""
    raw = client.EventsV1Api(api).list_namespaced_event(namespace, _preload_content=False)
    found = [e for e in json.loads(raw.data)["items"]
             if (e.get("regarding") or {}).get("kind") == "ChampionChallenger" and e["regarding"]["name"] == CC]
    return sorted(found, key=lambda e: str(e["eventTime"]))


def lease_holder(api: client.ApiClient, namespace: str) -> str | None:
    try:
        return str(client.CoordinationV1Api(api).read_namespaced_lease(CONTROLLER, namespace).spec.holder_identity
                   or "") or None
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def aliases(home: Path) -> dict[str, str]:
    return {k: str(v) for k, v in _registry(home).get_registered_model(MODEL).aliases.items()}


def assert_rolled_to(api: client.ApiClient, namespace: str, deployment: client.V1Deployment, version: str) -> None:
    """The Deployment serves ``version``, its newest ReplicaSet (that template) has every pod Ready and every
    older ReplicaSet is scaled to zero."""
    apps = client.AppsV1Api(api)
    name = deployment.metadata.name
    assert serves(deployment) == (f"models:/{MODEL}/{version}", version), name
    owned = [rs for rs in apps.list_namespaced_replica_set(namespace).items
             if any(o.name == name for o in rs.metadata.owner_references or [])]
    newest = max(owned, key=lambda rs: int(rs.metadata.annotations["deployment.kubernetes.io/revision"]))
    assert newest.spec.template.metadata.annotations["kingmaker.io/model-version"] == version, name
    assert newest.status.ready_replicas == newest.spec.replicas == deployment.spec.replicas >= 1, name
    assert all(rs.spec.replicas == 0 and not rs.status.replicas for rs in owned if rs is not newest), name


def wait_rolled(cluster: ControlPlane, api: client.ApiClient, namespace: str, arm: str) -> list[client.V1Deployment]:
    return cluster.wait_for(f"every {arm} Deployment rolled out", lambda: (
        lambda ds: ds if len(ds) == len(COLOURS) and all(rolled_out(d) for d in ds) else None)(
        arm_deployments(api, namespace, arm)), timeout=60)


# --- the tests -----------------------------------------------------------------------------------------------

def test_killed_midway_through_a_promotion_the_restarted_controller_finishes_it(
        cluster: ControlPlane, namespace: str, evidence: Evidence, tmp_path: Path) -> None:
    home = evidence.home(tmp_path / "home")
    install(cluster, namespace, evidence, tmp_path, approval="automatic")
    with cluster.api_client() as api:
        # the chart renders aliases (models:/fraud-detector@champion); the controller pins versions
        assert {serves(d) for d in arm_deployments(api, namespace, "champion")} == {
            (f"models:/{MODEL}@champion", None)}

        first = ControllerProcess(cluster, namespace, home, "controller-0_1",
                                  env={"KINGMAKER_FAILPOINTS": "after-alias-move"})
        with controllers(first):
            assert first.proc.wait(timeout=120) == -signal.SIGKILL, first.log()[-3000:]
        # dead between the alias move and the re-pointing: the intent is on the resource, serving lags
        status = resource(api, namespace)["status"]
        assert (status["phase"], status["championVersion"], status["challengerVersion"]) == ("Promoting", "1", "2")
        assert aliases(home) == {"champion": "2", "previous-champion": "1", "challenger": "2"}
        assert {serves(d) for d in arm_deployments(api, namespace, "champion")} == {(f"models:/{MODEL}/1", "1")}
        assert (router_yaml(api, namespace)["mode"], router_yaml(api, namespace)["challenger_weight"]) == ("shadow", 0.1)
        assert [e["reason"] for e in events(api, namespace)] == ["ChallengerBetter"]

        # the container restarts (same pod: same identity, so it holds the Lease at once)
        again = ControllerProcess(cluster, namespace, home, "controller-0_1")
        with controllers(again):
            cluster.wait_for("phase Promoted", lambda: resource(api, namespace).get("status", {}).get(
                "phase") == "Promoted", timeout=120)
            champions = wait_rolled(cluster, api, namespace, "champion")
            for deployment in champions:  # blue and green alike
                assert_rolled_to(api, namespace, deployment, "2")
            for deployment in arm_deployments(api, namespace, "challenger"):  # no challenger now: left alone
                assert serves(deployment) == (f"models:/{MODEL}/2", "2")
            cfg = router_yaml(api, namespace)
            assert (cfg["mode"], cfg["challenger_weight"], cfg["routing_field"]) == ("split", 0.0, "customer_id")
            assert lease_holder(api, namespace) == "controller-0_1"

            status = resource(api, namespace)["status"]
            assert (status["championVersion"], "challengerVersion" in status) == ("2", False)
            assert [h["action"] for h in status["history"]] == ["Promoted"]
            ready = next(c for c in status["conditions"] if c["type"] == "Ready")
            assert ready["status"] == "True" and ready["observedGeneration"] == 1
            assert aliases(home) == {"champion": "2", "previous-champion": "1"}
            tags = _registry(home).get_model_version(MODEL, "2").tags
            assert tags["kingmaker.promotion.reason"] == "ChallengerBetter"
            assert tags["kingmaker.promotion.time"] == status["history"][0]["time"]
            recorded = events(api, namespace)
            assert [(e["reason"], e["type"], e["action"]) for e in recorded] == [
                ("ChallengerBetter", "Normal", "Evaluate"), ("Promoted", "Normal", "Promote")]  # decided once
            assert {(e["reportingController"], e["reportingInstance"]) for e in recorded} == {
                ("kingmaker.io/promotion-controller", "controller-0_1")}
            assert again.stop() == 0  # SIGTERM: a clean stop gives the Lease up
        assert lease_holder(api, namespace) is None
        assert not re.search(r"\b403\b|Forbidden", first.log() + again.log())  # not "resourceVersion 4037"


def test_two_replicas_one_acts_watches_its_resource_retries_a_conflict_and_hands_over(
        cluster: ControlPlane, namespace: str, evidence: Evidence, tmp_path: Path) -> None:
    home = evidence.home(tmp_path / "home")
    install(cluster, namespace, evidence, tmp_path, approval="manual")
    quick = ("--lease-duration", "10")  # renew every 1.7 s, take over 10 s after the leader stopped renewing
    with cluster.api_client() as api:
        custom = client.CustomObjectsApi(api)
        leader = ControllerProcess(cluster, namespace, home, "controller-a_1", extra=quick)
        with controllers(leader):
            cluster.wait_for("the first replica holds the Lease",
                             lambda: lease_holder(api, namespace) == leader.identity, timeout=60)
            other = ControllerProcess(cluster, namespace, home, "controller-b_1", extra=quick)
            with controllers(other):
                cluster.wait_for("the challenger won, awaiting approval", lambda: resource(api, namespace).get(
                    "status", {}).get("phase") == "AwaitingApproval", timeout=120)
                assert aliases(home) == {"champion": "1", "challenger": "2"}  # nothing moves without approval
                pinned = {serves(d) for d in arm_deployments(api, namespace, "champion")}
                assert pinned == {(f"models:/{MODEL}/1", "1")}

                # a traffic edit while someone else keeps writing the resource: the controller sees the edit at
                # once (watch), its status write meets a 409, is re-read and retried
                writes = {"n": 0}
                stop = threading.Event()

                def writer() -> None:
                    with cluster.api_client() as own:
                        while not stop.is_set():
                            writes["n"] += 1
                            client.CustomObjectsApi(own).patch_namespaced_custom_object(
                                GROUP, VERSION, namespace, PLURAL, CC,
                                {"metadata": {"annotations": {"e2e.kingmaker.io/writes": str(writes["n"])}}})
                            stop.wait(0.1)

                latencies = []
                thread = threading.Thread(target=writer)
                thread.start()
                try:
                    for weight in (0.25, 0.3, 0.35):
                        edited = time.monotonic()
                        generation = custom.patch_namespaced_custom_object(
                            GROUP, VERSION, namespace, PLURAL, CC,
                            {"spec": {"traffic": {"challengerWeight": weight}}})["metadata"]["generation"]
                        cluster.wait_for(f"router weight {weight}", lambda w=weight: router_yaml(
                            api, namespace)["challenger_weight"] == w, timeout=30, interval=0.05)
                        latencies.append(time.monotonic() - edited)
                        cluster.wait_for("the edit evaluated", lambda g=generation: resource(api, namespace)[
                            "status"].get("observedGeneration") == g, timeout=30, interval=0.05)
                        if "status conflict, re-reading" in leader.log():
                            break
                finally:
                    stop.set()
                    thread.join()
                assert "status conflict, re-reading" in leader.log(), "no 409 met in three tries"
                doc = resource(api, namespace)
                assert doc["metadata"]["annotations"]["e2e.kingmaker.io/writes"] == str(writes["n"])  # none lost
                assert doc["status"]["phase"] == "AwaitingApproval"
                # re-evaluation is hourly and the loop's tick 10 s: under 5 s every time is the watch
                assert max(latencies) < 5.0, latencies

                # a human approves (the CLI, as the admin: the controller's Role cannot); the leader promotes
                approve = subprocess.run(
                    [str(Path(sys.executable).with_name("kingmaker")), "promote", "--kubernetes", "--approve",
                     "--name", CC, "--namespace", namespace, "--drift-from-prometheus"],
                    env={**leader.env, "KUBECONFIG": str(cluster.kubeconfig_path)}, capture_output=True, text=True,
                    timeout=120, check=False)
                assert approve.returncode == 0, approve.stderr[-3000:]
                approved = time.monotonic()
                assert "approved challenger v2" in approve.stdout
                cluster.wait_for("phase Promoted", lambda: resource(api, namespace)["status"]["phase"] == "Promoted",
                                 timeout=30, interval=0.1)
                promoted_after = time.monotonic() - approved
                print(f"reaction to a spec edit: {', '.join(f'{x:.2f}s' for x in latencies)}; "
                      f"Promoted {promoted_after:.2f}s after the approving command returned; "
                      f"concurrent writes: {writes['n']}")
                assert promoted_after < 5.0, promoted_after
                for deployment in wait_rolled(cluster, api, namespace, "champion"):
                    assert_rolled_to(api, namespace, deployment, "2")
                assert aliases(home) == {"champion": "2", "previous-champion": "1"}
                assert (router_yaml(api, namespace)["mode"], router_yaml(api, namespace)["challenger_weight"]) == (
                    "split", 0.0)

                # exactly one acted: every Event is the leader's, the other never reconciled
                assert {e["reportingInstance"] for e in events(api, namespace)} == {leader.identity}
                assert [e["reason"] for e in events(api, namespace)][-2:] == ["ChallengerBetter", "Promoted"]
                assert "champion v" not in other.log() and "PROMOTE" not in other.log()

                # the leader dies: the other takes the Lease over and reconciles at once
                leader.stop(signal.SIGKILL)
                cluster.wait_for("the other replica holds the Lease",
                                 lambda: lease_holder(api, namespace) == other.identity, timeout=40)
                cluster.wait_for("the new leader reconciled", lambda: "champion v2, no challenger" in other.log(),
                                 timeout=30)

                # every call the controller made went through with the chart's Role; approving does not
                assert not re.search(r"\b403\b|Forbidden", leader.log() + other.log())
                token = cluster.service_account_token(namespace, CONTROLLER)
                with cluster.api_client(token) as as_controller:
                    kube = Kube(as_controller, namespace)
                    with pytest.raises(PermanentError, match=r'403.*cannot patch resource "championchallengers"'):
                        kube.approve(CC, "2", None)


def test_the_watch_sees_every_change_at_once_and_an_expired_version_is_gone(
        cluster: ControlPlane, namespace: str, evidence: Evidence, tmp_path: Path) -> None:
    install(cluster, namespace, evidence, tmp_path, approval="automatic")
    token = cluster.service_account_token(namespace, CONTROLLER)  # list and watch: the chart's Role grants them
    with cluster.api_client() as admin, cluster.api_client(token) as api:
        custom = client.CustomObjectsApi(admin)
        kube = Kube(api, namespace)
        watch = ResourceWatch(kube, timeout_seconds=30)
        stop = threading.Event()
        thread = threading.Thread(target=watch.run, args=(stop,), daemon=True)
        thread.start()
        try:
            assert watch.synced.wait(10)
            assert [d["metadata"]["name"] for d in watch.resources()] == [CC]

            def seen(check: Any, what: str) -> float:
                started = time.monotonic()
                while not check(watch.resources()):
                    assert time.monotonic() - started < 5, f"the watch did not see {what}"
                    watch.wait(0.5)
                return time.monotonic() - started

            custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, CC,
                                                  {"spec": {"approvedChallengerVersion": "2"}})
            seen(lambda docs: docs[0]["metadata"]["generation"] == 2, "a spec change")
            second = resource(admin, namespace)
            second["metadata"] = {"name": "second"}
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, second)
            seen(lambda docs: {d["metadata"]["name"] for d in docs} == {CC, "second"}, "a new resource")
            custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "second")
            seen(lambda docs: [d["metadata"]["name"] for d in docs] == [CC], "a deletion")
        finally:
            stop.set()
        # a resourceVersion the server no longer keeps: 410 Gone, which makes the watch list again
        with pytest.raises(Gone, match="410"):
            list(kube.watch("1", 5))
        with pytest.raises(NotFound):
            kube.get("second")
