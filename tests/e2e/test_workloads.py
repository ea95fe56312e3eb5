"""Controllers, scheduler and kwok work together: Deployments roll, Jobs complete, owners take their
dependents with them. Images are never pulled (kwok plays the kubelet), so any image name will do."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest
from kubernetes import client

from tests.e2e.cluster import NODE_NAME, POD_CIDR, ControlPlane, condition_true

pytestmark = pytest.mark.e2e


def _deployment(name: str, image: str, replicas: int = 2) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=replicas, selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="app", image=image)]))))


def _rolled_out(apps: client.AppsV1Api, namespace: str, name: str) -> bool:
    """What `kubectl rollout status` waits for: the newest generation seen, every replica updated,
    ready and available, and no old pod left."""
    d = apps.read_namespaced_deployment_status(name, namespace)
    s, want = d.status, d.spec.replicas
    return bool(s.observed_generation == d.metadata.generation and condition_true(s, "Available")
                and s.replicas == s.updated_replicas == s.ready_replicas == s.available_replicas == want)


def test_a_deployment_becomes_available_and_rolls_to_a_new_replicaset(cluster: ControlPlane, namespace: str) -> None:
    with cluster.api_client() as api:
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        apps.create_namespaced_deployment(namespace, _deployment("scorer", "registry.invalid/scorer:1"))
        cluster.wait_for("Deployment scorer available", lambda: _rolled_out(apps, namespace, "scorer"))

        pods = core.list_namespaced_pod(namespace, label_selector="app=scorer").items
        assert len(pods) == 2
        for pod in pods:
            assert pod.spec.node_name == NODE_NAME  # placed by kube-scheduler
            assert pod.status.phase == "Running"
            assert condition_true(pod.status, "Ready")
            assert ip_address(pod.status.pod_ip) in ip_network(POD_CIDR)  # an address written by kwok, never dialled

        (old_rs,) = apps.list_namespaced_replica_set(namespace, label_selector="app=scorer").items
        apps.patch_namespaced_deployment("scorer", namespace, {"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "registry.invalid/scorer:2"}]}}}})
        cluster.wait_for("Deployment scorer rolled to :2", lambda: _rolled_out(apps, namespace, "scorer")
                         and apps.read_namespaced_deployment("scorer", namespace).metadata.generation == 2)

        sets = {rs.metadata.name: rs for rs in apps.list_namespaced_replica_set(
            namespace, label_selector="app=scorer").items}
        assert len(sets) == 2
        new_rs = next(rs for name, rs in sets.items() if name != old_rs.metadata.name)
        assert new_rs.spec.template.spec.containers[0].image == "registry.invalid/scorer:2"
        assert (new_rs.status.ready_replicas, new_rs.metadata.annotations["deployment.kubernetes.io/revision"]) == (2, "2")
        assert (sets[old_rs.metadata.name].spec.replicas, sets[old_rs.metadata.name].status.replicas) == (0, 0)
        cluster.wait_for("old pods gone", lambda: {p.spec.containers[0].image for p in core.list_namespaced_pod(
            namespace, label_selector="app=scorer").items} == {"registry.invalid/scorer:2"})

        # The garbage collector removes the ReplicaSets and Pods the Deployment owned.
        apps.delete_namespaced_deployment("scorer", namespace, propagation_policy="Background")
        cluster.wait_for("ReplicaSets and Pods collected", lambda: not apps.list_namespaced_replica_set(
            namespace, label_selector="app=scorer").items and not core.list_namespaced_pod(
            namespace, label_selector="app=scorer").items)


def test_a_job_runs_to_completion(cluster: ControlPlane, namespace: str) -> None:
    # The drift job is a CronJob: its Jobs must finish here (kwok completes Job pods with exit code 0).
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name="drift-once"),
        spec=client.V1JobSpec(backoff_limit=0, template=client.V1PodTemplateSpec(spec=client.V1PodSpec(
            restart_policy="Never", containers=[client.V1Container(name="drift", image="registry.invalid/drift:1")]))))
    with cluster.api_client() as api:
        batch = client.BatchV1Api(api)
        batch.create_namespaced_job(namespace, job)

        def finished() -> client.V1JobStatus | None:
            status = batch.read_namespaced_job_status("drift-once", namespace).status
            return status if status.succeeded or status.failed else None

        status = cluster.wait_for("Job drift-once finished", finished)
        assert status.succeeded == 1 and not status.failed
        assert condition_true(status, "Complete")
