"""The API server is a real v1.37.2 one: version, namespaces, a ConfigMap round trip, Leases."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.cluster import NODE_NAME, ControlPlane

pytestmark = pytest.mark.e2e


def test_server_reports_its_release_version(cluster: ControlPlane) -> None:
    # Built without the version ldflags it would say v0.0.0-master+$Format:%H$ and `kubectl version` fails.
    version = json.loads(cluster.run("kubectl", "version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == "v1.37.2"
    assert (version["serverVersion"]["major"], version["serverVersion"]["minor"]) == ("1", "37")
    with cluster.api_client() as api:
        assert client.VersionApi(api).get_code().git_version == "v1.37.2"


def test_namespaces_and_a_configmap_round_trip(cluster: ControlPlane, namespace: str) -> None:
    with cluster.api_client() as api:
        core = client.CoreV1Api(api)
        names = {ns.metadata.name: ns.status.phase for ns in core.list_namespace().items}
        assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names.keys()
        assert names[namespace] == "Active"

        data = {"router.yaml": "mode: split\nchallenger_weight: 0.1\n", "note": "café ✓"}
        created = core.create_namespaced_config_map(namespace, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="settings"), data=data))
        assert core.read_namespaced_config_map("settings", namespace).data == data

        created.data = {**data, "note": "changed"}
        updated = core.replace_namespaced_config_map("settings", namespace, created)
        assert updated.metadata.resource_version != created.metadata.resource_version
        note = cluster.run("kubectl", "-n", namespace, "get", "configmap", "settings", "-o", "jsonpath={.data.note}").stdout
        assert note == "changed"

        core.delete_namespaced_config_map("settings", namespace)
        with pytest.raises(ApiException) as gone:
            core.read_namespaced_config_map("settings", namespace)
        assert gone.value.status == 404


def test_a_lease_is_taken_renewed_and_guarded_by_its_resource_version(cluster: ControlPlane, namespace: str) -> None:
    # Leader election (k8s/kube.py LeaseElector) relies on exactly this: MicroTime fields written by the
    # python client, and a write based on a stale resourceVersion refused with 409.
    acquired = datetime.now(UTC).replace(microsecond=123456)
    with cluster.api_client() as api:
        coord = client.CoordinationV1Api(api)
        lease = coord.create_namespaced_lease(namespace, client.V1Lease(
            metadata=client.V1ObjectMeta(name="kingmaker-controller"),
            spec=client.V1LeaseSpec(holder_identity="replica-a", lease_duration_seconds=15,
                                    acquire_time=acquired, renew_time=acquired, lease_transitions=0)))
        read = coord.read_namespaced_lease("kingmaker-controller", namespace)
        assert read.spec.holder_identity == "replica-a"
        assert read.spec.renew_time == acquired  # microseconds survive the round trip

        renewed_at = acquired + timedelta(seconds=5)
        read.spec.renew_time = renewed_at
        renewed = coord.replace_namespaced_lease("kingmaker-controller", namespace, read)
        assert renewed.spec.renew_time == renewed_at
        assert renewed.metadata.resource_version != lease.metadata.resource_version

        lease.spec.holder_identity = "replica-b"  # based on the first version: must lose
        with pytest.raises(ApiException) as conflict:
            coord.replace_namespaced_lease("kingmaker-controller", namespace, lease)
        assert conflict.value.status == 409
        assert coord.read_namespaced_lease("kingmaker-controller", namespace).spec.holder_identity == "replica-a"

        # kwok heartbeats the fake Node through its Lease (renewed every 10 s), as a kubelet does.
        node_lease = coord.read_namespaced_lease(NODE_NAME, "kube-node-lease").spec
        assert node_lease.holder_identity and node_lease.lease_duration_seconds == 40
        assert datetime.now(UTC) - node_lease.renew_time < timedelta(seconds=30)
