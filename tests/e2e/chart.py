"""The project's Helm chart on the e2e control plane: installing it, and reading back what it made."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.conftest import ROOT
from tests.e2e.cluster import ControlPlane, condition_true

CHART = ROOT / "helm" / "kingmaker"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
#: The Prometheus Operator's CRDs (ServiceMonitor, PodMonitor, PrometheusRule), vendored for the chart's tests.
OPERATOR_CRDS = ROOT / "tests" / "unit" / "helm" / "prometheus-operator-crds"
RELEASE = "kingmaker"
#: Every install here pins the HPAs' minimum to 1 (the chart's default is 2). Not to save pods: the chart leaves
#: spec.replicas to the HPA, so a new Deployment starts with 1 pod and its HPA scales it to minReplicas moments
#: later; kwok makes the first pod Ready within a second, and helm 4.3.1's `--wait=watcher` then races the
#: scale-up: it stops watching once all is Current, re-reads the statuses and fails the install with "not
#: ready ... Replicas: 1/2" (seen here; pkg/kube/statuswait.go). On a real cluster a Scorer needs far longer than
#: the HPA's first sync to become Ready, so the window is small there.
ONE_REPLICA = ("scorer.autoscaling.minReplicas=1", "router.autoscaling.minReplicas=1")


def helm_upgrade(cluster: ControlPlane, namespace: str, *options: str, values: tuple[Path, ...] = (),
                 sets: tuple[str, ...] = (), check: bool = True,
                 timeout: str = "2m") -> subprocess.CompletedProcess[str]:
    """``helm upgrade --install`` of the chart, waiting for every resource (Helm v4's watcher); `ONE_REPLICA` first,
    then ``values`` and ``sets``."""
    args = ["upgrade", "--install", RELEASE, str(CHART), "-n", namespace, "--wait=watcher", "--timeout", timeout,
            *options]
    for v in values:
        args += ["-f", str(v)]
    for s in (*ONE_REPLICA, *sets):
        args += ["--set", s]
    return cluster.run("helm", *args, check=check)


def history(cluster: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    return list(json.loads(cluster.run("helm", "history", RELEASE, "-n", namespace, "-o", "json").stdout))


def release_values(cluster: ControlPlane, namespace: str) -> dict[str, Any]:
    """The release's computed values (chart defaults included)."""
    return dict(json.loads(cluster.run("helm", "get", "values", RELEASE, "-n", namespace, "--all", "-o",
                                       "json").stdout))


def live_colour(api: client.ApiClient, namespace: str) -> tuple[str, str]:
    """(the colour the client Service selects, its kingmaker.io/switch-check annotation)."""
    service = client.CoreV1Api(api).read_namespaced_service(RELEASE, namespace)
    return service.spec.selector["kingmaker.io/color"], service.metadata.annotations["kingmaker.io/switch-check"]


def images(api: client.ApiClient, namespace: str) -> dict[str, str]:
    """Deployment name -> the image of its first container."""
    return {d.metadata.name: d.spec.template.spec.containers[0].image
            for d in client.AppsV1Api(api).list_namespaced_deployment(namespace).items}


def rolled_out(deployment: client.V1Deployment) -> bool:
    """What `kubectl rollout status` waits for: the newest generation observed, every replica updated and
    available, no pod of an earlier rollout left."""
    s, want = deployment.status, deployment.spec.replicas
    return bool(s.observed_generation == deployment.metadata.generation and condition_true(s, "Available")
                and s.replicas == s.updated_replicas == s.available_replicas == want)
