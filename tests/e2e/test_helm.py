"""helm v4 against the real API server: install --wait, helm test, the kubeVersion gate, uninstall.
The chart is written here, tiny on purpose: the project's own chart is tested on the same fixture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.cluster import ControlPlane

pytestmark = pytest.mark.e2e

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-web
  labels: {app: {{ .Release.Name }}-web}
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels: {app: {{ .Release.Name }}-web}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}-web}
    spec:
      containers:
        - name: web
          image: {{ .Values.image | quote }}
"""

TEST_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: {{ .Release.Name }}-smoke-test
  annotations:
    helm.sh/hook: test
    helm.sh/hook-delete-policy: before-hook-creation
spec:
  restartPolicy: Never
  containers:
    - name: check
      image: registry.invalid/curl:1
      command: [curl, --fail, "http://{{ .Release.Name }}-web"]
"""


def _chart(folder: Path, kube_version: str) -> Path:
    (folder / "templates" / "tests").mkdir(parents=True)
    (folder / "Chart.yaml").write_text(f"apiVersion: v2\nname: smoke\nversion: 0.1.0\nkubeVersion: '{kube_version}'\n")
    (folder / "values.yaml").write_text("replicas: 2\nimage: registry.invalid/web:1\n")
    (folder / "templates" / "deployment.yaml").write_text(DEPLOYMENT)
    (folder / "templates" / "tests" / "smoke-test.yaml").write_text(TEST_POD)
    return folder


def test_helm_installs_tests_and_uninstalls_a_chart(cluster: ControlPlane, namespace: str, tmp_path: Path) -> None:
    chart = _chart(tmp_path / "smoke", ">=1.37.0-0")
    install = cluster.run("helm", "install", "smoke", str(chart), "-n", namespace, "--wait=watcher",
                          "--timeout=2m", "-o", "json")
    assert json.loads(install.stdout)["info"]["status"] == "deployed"
    with cluster.api_client() as api:
        apps = client.AppsV1Api(api)
        assert apps.read_namespaced_deployment_status("smoke-web", namespace).status.ready_replicas == 2

        tested = cluster.run("helm", "test", "smoke", "-n", namespace, "--timeout=2m")
        assert "TEST SUITE:     smoke-smoke-test" in tested.stdout and "Phase:          Succeeded" in tested.stdout

        cluster.run("helm", "uninstall", "smoke", "-n", namespace, "--wait", "--timeout=2m")
        with pytest.raises(ApiException) as gone:
            apps.read_namespaced_deployment("smoke-web", namespace)
        assert gone.value.status == 404
    assert cluster.run("helm", "list", "-n", namespace, "-q").stdout.strip() == ""


def test_helm_refuses_a_chart_whose_kube_version_does_not_match(cluster: ControlPlane, namespace: str,
                                                                 tmp_path: Path) -> None:
    # The server's version is real (built with the version ldflags), so constraints are enforced.
    chart = _chart(tmp_path / "old", "<1.30.0-0")
    refused = cluster.run("helm", "install", "old", str(chart), "-n", namespace, check=False)
    assert refused.returncode != 0
    assert "chart requires kubeVersion: <1.30.0-0 which is incompatible with Kubernetes v1.37.2" in refused.stderr
