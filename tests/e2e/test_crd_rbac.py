"""The project's ChampionChallenger CRD on a real API server (structural schema: defaults, validation, the
status subresource), and RBAC enforced on a ServiceAccount token from the TokenRequest API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.conftest import ROOT
from tests.e2e.cluster import ControlPlane, condition_true

pytestmark = pytest.mark.e2e

CRD = ROOT / "k8s" / "crd" / "championchallenger.yaml"
EXAMPLE = ROOT / "k8s" / "examples" / "championchallenger.yaml"
GROUP, VERSION, PLURAL = "kingmaker.io", "v1alpha1", "championchallengers"


@pytest.fixture(scope="module")
def crd(cluster: ControlPlane) -> Iterator[str]:
    """The CRD applied with kubectl and Established; removed (and waited for) after this module's tests."""
    name = yaml.safe_load(CRD.read_text())["metadata"]["name"]
    cluster.run("kubectl", "apply", "-f", str(CRD))
    with cluster.api_client() as api:
        ext = client.ApiextensionsV1Api(api)
        cluster.wait_for(f"CRD {name} Established", lambda: condition_true(
            ext.read_custom_resource_definition_status(name).status, "Established"))
        yield name
        ext.delete_custom_resource_definition(name)

        def gone() -> bool:  # so that a later `helm install` creates it afresh instead of finding it terminating
            try:
                ext.read_custom_resource_definition(name)
            except ApiException as exc:
                return exc.status == 404
            return False

        cluster.wait_for(f"CRD {name} deleted", gone)


def _example(name: str) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"] = {"name": name}
    return body


def _error(exc: ApiException) -> str:
    return str(json.loads(exc.body)["message"])


def test_a_championchallenger_is_defaulted_validated_and_has_a_status_subresource(
        cluster: ControlPlane, crd: str, namespace: str) -> None:
    with cluster.api_client() as api:
        custom = client.CustomObjectsApi(api)
        created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _example("fraud"))
        policy = created["spec"]["policy"]
        # Schema defaults for keys the example leaves out, filled in by the API server.
        assert (policy["fpr"], policy["horizonPerArm"], policy["plannedAnalyses"]) == (0.001, 50000, 10)
        assert created["metadata"]["generation"] == 1

        status = {"phase": "Evaluating", "championVersion": "1", "challengerVersion": "2", "looks": 1}
        patched = custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "fraud",
                                                               {"status": status})
        assert patched["status"] == status
        assert patched["metadata"]["generation"] == 1  # a status write is not a spec change

        # Through the main resource, status is ignored and spec changes bump the generation.
        spec_patch = {"spec": {"traffic": {"challengerWeight": 0.2}}, "status": {"phase": "Promoted"}}
        after = custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "fraud", spec_patch)
        assert (after["spec"]["traffic"]["challengerWeight"], after["status"]["phase"]) == (0.2, "Evaluating")
        assert after["metadata"]["generation"] == 2

        table = cluster.run("kubectl", "-n", namespace, "get", "cc", "fraud", "--no-headers").stdout.split()
        assert table[:6] == ["fraud", "fraud-detector", "1", "2", "split", "0.2"]  # the printer columns

        bad = _example("bad")
        bad["spec"]["traffic"]["challengerWeight"] = 2
        with pytest.raises(ApiException) as invalid:
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, bad)
        assert invalid.value.status == 422
        assert "spec.traffic.challengerWeight" in _error(invalid.value)
        with pytest.raises(ApiException) as bad_phase:
            custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "fraud",
                                                         {"status": {"phase": "Winning"}})
        assert bad_phase.value.status == 422 and "status.phase" in _error(bad_phase.value)


def test_a_service_account_token_gets_exactly_what_its_role_grants(
        cluster: ControlPlane, crd: str, namespace: str) -> None:
    rules = [client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["get", "list"]),
             client.V1PolicyRule(api_groups=[GROUP], resources=[PLURAL], verbs=["get"]),
             client.V1PolicyRule(api_groups=[GROUP], resources=[f"{PLURAL}/status"], verbs=["patch"])]
    with cluster.api_client() as admin:
        core, rbac = client.CoreV1Api(admin), client.RbacAuthorizationV1Api(admin)
        core.create_namespaced_service_account(namespace, client.V1ServiceAccount(
            metadata=client.V1ObjectMeta(name="controller")))
        rbac.create_namespaced_role(namespace, client.V1Role(metadata=client.V1ObjectMeta(name="controller"),
                                                             rules=rules))
        rbac.create_namespaced_role_binding(namespace, client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="controller"),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="controller"),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="controller", namespace=namespace)]))
        client.CustomObjectsApi(admin).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                                       _example("fraud"))

    token = cluster.service_account_token(namespace, "controller")
    user = f"system:serviceaccount:{namespace}:controller"
    with cluster.api_client(token) as api:
        review = client.AuthenticationV1Api(api).create_self_subject_review(client.V1SelfSubjectReview())
        assert review.status.user_info.username == user

        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        # Granted: read configmaps (the CA bundle the controller-manager publishes in every namespace;
        # 403 until RBAC's informer has seen the binding, 404 until the bundle is there) ...
        ca = cluster.wait_for("kube-root-ca.crt readable with the token",
                              lambda: core.read_namespaced_config_map("kube-root-ca.crt", namespace))
        assert "BEGIN CERTIFICATE" in ca.data["ca.crt"]
        assert core.list_namespaced_config_map(namespace).items

        def denied(call: Any, *args: Any) -> str:
            with pytest.raises(ApiException) as exc:
                call(*args)
            assert exc.value.status == 403, exc.value
            return _error(exc.value)

        # ... read the resource, and patch its status without reading it first (kubectl patch
        # --subresource=status would GET the status first and fail on this Role).
        assert custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "fraud")["spec"]
        status = {"status": {"phase": "Evaluating", "looks": 3}}
        assert custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "fraud",
                                                            status)["status"]["looks"] == 3
        # Not granted: writing configmaps, changing the spec, reading the status subresource,
        # anything in another namespace.
        message = denied(core.create_namespaced_config_map, namespace, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="x")))
        assert user in message and 'cannot create resource "configmaps"' in message
        denied(custom.patch_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, "fraud",
               {"spec": {"traffic": {"challengerWeight": 0.5}}})
        denied(custom.get_namespaced_custom_object_status, GROUP, VERSION, namespace, PLURAL, "fraud")
        denied(core.list_namespaced_config_map, "default")
