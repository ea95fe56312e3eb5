"""The project's chart (helm/kingmaker) installed for real with helm v4: every ci/ scenario with --wait and
`helm test`, the values schema, blue-green (a switch only to a ready colour, `helm rollback` back) and the
release script .ci/deploy from a first install to a failed deploy rolled back.

kwok plays the kubelet: pods are scheduled, turn Running and Ready, and the test hook's Job completes, but no
container runs. So `helm test` here proves the hook is made and waited for; the test script itself
(files/helm-test.py) answering against real Routers is the integration tier's business.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.conftest import ROOT
from tests.e2e.chart import (
    ONE_REPLICA,
    OPERATOR_CRDS,
    RELEASE,
    SCENARIOS,
    helm_upgrade,
    history,
    images,
    live_colour,
    release_values,
    rolled_out,
)
from tests.e2e.cluster import ControlPlane, condition_true

pytestmark = pytest.mark.e2e

CRD = "championchallengers.kingmaker.io"
#: The Secrets ci/shadow-values.yaml names (the chart only refers to Secrets; they must exist first).
SHADOW_SECRETS = {"kingmaker-feedback": {"tokens": "feedback-token\n"}, "kingmaker-scoring": {"tokens": "scoring\n"},
                  "kingmaker-mlflow": {"MLFLOW_TRACKING_TOKEN": "t"},
                  "kingmaker-s3": {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}}


@pytest.fixture(scope="module")
def operator_crds(cluster: ControlPlane) -> Iterator[None]:
    """The Prometheus Operator's CRDs, which the monitoring scenario's objects need (as on a real cluster
    with kube-prometheus-stack); server-side apply: they are too large for kubectl's annotation."""
    cluster.run("kubectl", "apply", "--server-side", "-f", str(OPERATOR_CRDS))
    cluster.run("kubectl", "wait", "--for=condition=Established", "--timeout=60s", "-f", str(OPERATOR_CRDS))
    yield


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.name.removesuffix("-values.yaml"))
def test_every_ci_scenario_installs_with_its_crd_waits_for_ready_and_passes_helm_test(
        cluster: ControlPlane, namespace: str, scenario: Path, operator_crds: None) -> None:
    with cluster.api_client() as api:
        if scenario.name == "shadow-values.yaml":
            core = client.CoreV1Api(api)
            for name, data in SHADOW_SECRETS.items():
                core.create_namespaced_secret(namespace, client.V1Secret(
                    metadata=client.V1ObjectMeta(name=name), string_data=data))
        helm_upgrade(cluster, namespace, values=(scenario,))
        (release,) = history(cluster, namespace)
        assert (release["revision"], release["status"]) == (1, "deployed")

        # --wait=watcher returned: every Deployment rolled out, the CRD from crds/ is served and validating
        deployments = client.AppsV1Api(api).list_namespaced_deployment(namespace).items
        assert deployments and all(rolled_out(d) for d in deployments), [d.status for d in deployments]
        ext = client.ApiextensionsV1Api(api)
        assert condition_true(ext.read_custom_resource_definition_status(CRD).status, "Established")
        (cc,) = client.CustomObjectsApi(api).list_namespaced_custom_object(
            "kingmaker.io", "v1alpha1", namespace, "championchallengers")["items"]
        assert cc["spec"]["policy"]["plannedAnalyses"] == 10  # a CRD default: the API server applied the schema
        colour, check = live_colour(api, namespace)
        assert colour == release_values(cluster, namespace)["activeColor"]
        assert check.startswith("new: no live client Service yet")  # looked at the cluster: not "offline"
        if scenario.name == "monitoring-values.yaml":
            monitoring = client.CustomObjectsApi(api)
            for plural in ("podmonitors", "servicemonitors", "prometheusrules"):
                assert monitoring.list_namespaced_custom_object("monitoring.coreos.com", "v1", namespace,
                                                                plural)["items"], plural

    tested = cluster.run("helm", "test", RELEASE, "-n", namespace, "--timeout=2m")
    assert "TEST SUITE:     kingmaker-test" in tested.stdout and "Phase:          Succeeded" in tested.stdout


def test_the_schema_refuses_bad_values_naming_each_key(cluster: ControlPlane, namespace: str) -> None:
    refused = helm_upgrade(cluster, namespace, sets=("activeColor=purple", "router.service.port=0",
                                                     "mlflow.trackingUri=sqlite:///mlflow.db"), check=False)
    assert refused.returncode != 0
    errors = {line.strip() for line in refused.stderr.splitlines() if line.strip().startswith("- at ")}
    assert errors == {"- at '/activeColor': value must be one of 'blue', 'green'",
                      "- at '/mlflow/trackingUri': 'sqlite:///mlflow.db' does not match pattern '^(https?|databricks)://.+'",
                      "- at '/router/service/port': minimum: got 0, want 1"}, refused.stderr
    assert "Traceback" not in refused.stderr
    assert cluster.run("helm", "list", "-n", namespace, "-q").stdout.strip() == ""  # nothing was installed


def test_blue_green_switches_only_to_a_ready_colour_and_rollback_switches_back(
        cluster: ControlPlane, namespace: str) -> None:
    def upgrade(*sets: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return helm_upgrade(cluster, namespace, "--reset-then-reuse-values", sets=sets, check=check)

    def refused(*sets: str) -> str:
        proc = upgrade(*sets, check=False)
        assert proc.returncode != 0, proc.stdout
        (line,) = [x for x in proc.stderr.splitlines() if "kingmaker blue-green" in x]
        return line

    with cluster.api_client() as api:
        apps = client.AppsV1Api(api)
        helm_upgrade(cluster, namespace, sets=("images.tag=0.1.0",))
        assert live_colour(api, namespace)[0] == "blue"

        # green does not exist yet: no switch (and the release is not touched)
        line = refused("activeColor=green", "green.enabled=true", "green.image.tag=0.2.0")
        assert "cannot switch traffic from blue to green: Deployment kingmaker-router-green does not exist" in line
        assert len(history(cluster, namespace)) == 1

        # stage green; blue keeps the traffic and its pods (the live colour is pinned to its tag)
        blue_before = {n: i for n, i in images(api, namespace).items() if n.endswith("-blue")}
        upgrade("blue.image.tag=0.1.0", "green.enabled=true", "green.image.tag=0.2.0", "images.tag=0.2.0")
        assert live_colour(api, namespace) == ("blue", "unchanged: blue stays live")
        assert {n: i for n, i in images(api, namespace).items() if n.endswith("-blue")} == blue_before
        assert images(api, namespace)["kingmaker-champion-green"] == "ghcr.io/kingmaker/kingmaker-scorer:0.2.0"
        staged = history(cluster, namespace)[-1]["revision"]

        # a tag green does not run: no switch
        line = refused("activeColor=green", "green.image.tag=0.3.0")
        assert ("Deployment kingmaker-champion-green runs ghcr.io/kingmaker/kingmaker-scorer:0.2.0, not "
                "ghcr.io/kingmaker/kingmaker-scorer:0.3.0") in line

        # green mid-rollout with a pod that never becomes ready (its old pod still serves): no switch
        apps.patch_namespaced_deployment("kingmaker-champion-green", namespace, {"spec": {"template": {"spec": {
            "nodeSelector": {"kingmaker.io/e2e": "nowhere"}}}}})

        def stuck() -> bool:
            d = apps.read_namespaced_deployment("kingmaker-champion-green", namespace)
            return bool(d.status.observed_generation == d.metadata.generation and d.status.replicas == 2
                        and d.status.updated_replicas == 1 and d.status.available_replicas == 1)

        cluster.wait_for("green's stuck rollout observed (one new pod Pending, the old one available)", stuck)
        line = refused("activeColor=green")
        assert "Deployment kingmaker-champion-green: 1/1 replicas available, 1 updated, 1 of the previous rollout " \
               "still running" in line
        assert live_colour(api, namespace)[0] == "blue" and history(cluster, namespace)[-1]["revision"] == staged

        # green ready again: the switch goes through
        cluster.run("kubectl", "-n", namespace, "rollout", "undo", "deployment/kingmaker-champion-green")
        cluster.wait_for("green champion ready again", lambda: rolled_out(
            apps.read_namespaced_deployment("kingmaker-champion-green", namespace)))
        switched = upgrade("activeColor=green")
        assert live_colour(api, namespace) == (
            "green", "ready: switching from blue to green; every green Deployment runs the requested image and "
                     "is available")
        assert "Live colour: green" in switched.stdout and "helm rollback kingmaker" in switched.stdout
        assert rolled_out(apps.read_namespaced_deployment("kingmaker-router-blue", namespace))  # blue stays warm

        # helm rollback to the staged revision: traffic back on blue at once
        cluster.run("helm", "rollback", RELEASE, str(staged), "-n", namespace, "--wait=watcher", "--timeout=2m")
        assert live_colour(api, namespace)[0] == "blue"
        assert history(cluster, namespace)[-1]["description"] == f"Rollback to {staged}"


def test_the_release_script_installs_stages_switches_and_rolls_a_failed_deploy_back(
        cluster: ControlPlane, namespace: str) -> None:
    def deploy(version: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(ROOT / ".ci" / "deploy"), "--version", version, "--namespace", namespace,
                               *(a for s in ONE_REPLICA for a in ("--set", s)), *extra],
                              capture_output=True, text=True, env=cluster.env(), timeout=300, check=False)

    with cluster.api_client() as api:
        first = deploy("0.1.0", "--timeout", "2m")
        assert first.returncode == 0, first.stderr
        assert "done: 0.1.0 deployed; blue takes the traffic" in first.stderr
        assert live_colour(api, namespace)[0] == "blue"

        second = deploy("0.2.0", "--timeout", "2m")
        assert second.returncode == 0, second.stderr
        said = [re.sub(r"\x1b\[[0-9;]*m", "", line).removeprefix("[deploy] ") for line in second.stderr.splitlines()
                if "[deploy]" in line]
        steps = [line for line in said if not line.startswith(("$ ", "  test:"))]
        assert steps[1:5] == ["stage 0.2.0 on green (blue keeps the traffic on 0.1.0)", "test blue and the staged green",
                              "switch traffic from blue to green", "test green live"]
        assert live_colour(api, namespace)[0] == "green"
        assert {n: i.rsplit(":", 1)[1] for n, i in images(api, namespace).items() if "controller" not in n} == {
            **{f"kingmaker-{r}-blue": "0.1.0" for r in ("router", "champion", "challenger")},
            **{f"kingmaker-{r}-green": "0.2.0" for r in ("router", "champion", "challenger")}}
        before = history(cluster, namespace)[-1]["revision"]

        # a release whose pods never become ready (more CPU than any node has): --wait times out, the
        # upgrade is rolled back, the script exits 1 and green keeps serving 0.2.0
        failed = deploy("0.3.0", "--timeout", "10s", "--set", "scorer.resources.requests.cpu=5000")
        assert failed.returncode == 1, failed.stderr
        assert failed.stderr.strip().splitlines()[-1] == (
            f"deploy: stage 0.3.0 on blue (green keeps the traffic on 0.2.0) failed; the release is back where it "
            f"was (revision {before})")
        last = history(cluster, namespace)[-1]
        assert (last["status"], last["description"]) == ("deployed", f"Rollback to {before}")
        assert live_colour(api, namespace)[0] == "green"
        assert images(api, namespace)["kingmaker-champion-green"].endswith(":0.2.0")
        assert release_values(cluster, namespace)["green"]["image"]["tag"] == "0.2.0"
