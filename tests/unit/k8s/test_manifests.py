"""The plain manifests in k8s/ (generated from the Helm chart by .ci/manifests): valid against the
Kubernetes OpenAPI schemas (kubernetes-validate, offline, strict: unknown fields are errors), listed by
k8s/kustomization.yaml, and every `kingmaker` command in them is accepted by the real command line."""

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from kingmaker import cli

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "k8s"
MANIFESTS = [K8S / "rbac.yaml", *sorted((K8S / "manifests").glob("*.yaml"))]
KUSTOMIZATION = K8S / "kustomization.yaml"
KUBERNETES = kubernetes_validate.latest_version()


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {})
    pod = spec.get("jobTemplate", {}).get("spec", {}).get("template", {}) or spec.get("template", {})
    return list(pod.get("spec", {}).get("containers", []))


@pytest.mark.parametrize("path", MANIFESTS + sorted((K8S / "crd").glob("*.yaml")), ids=lambda p: p.name)
def test_manifests_are_valid_kubernetes(path: Path) -> None:
    for doc in _docs(path):
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_the_validator_rejects_an_unknown_field() -> None:
    doc = _docs(K8S / "manifests" / "drift-cronjob.yaml")[0]
    _containers(doc)[0]["comand"] = ["kingmaker"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_kustomization_lists_existing_files_and_every_manifest() -> None:
    # kustomize loads no file above the kustomization's folder, hence k8s/kustomization.yaml
    kustomization = _docs(KUSTOMIZATION)[0]
    assert all(".." not in r for r in kustomization["resources"])
    listed = {(K8S / r).resolve() for r in kustomization["resources"]}
    assert all(p.exists() for p in listed)
    assert listed == {p.resolve() for p in MANIFESTS} | {(K8S / "crd" / "championchallenger.yaml").resolve()}


def test_every_kingmaker_command_parses() -> None:
    parser = cli.build_parser()
    commands = [c for p in MANIFESTS for d in _docs(p) for c in _containers(d) if c.get("command") == ["kingmaker"]]
    assert {c["args"][0] for c in commands} == {"drift", "promote", "retrain"}
    for container in commands:
        parser.parse_args(container["args"])  # exits (fails the test) on an unknown or malformed flag


def test_the_controller_runs_as_the_service_account_rbac_grants() -> None:
    deployment = _docs(K8S / "manifests" / "controller-deployment.yaml")[0]
    account = next(d for d in _docs(K8S / "rbac.yaml") if d["kind"] == "ServiceAccount")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]
