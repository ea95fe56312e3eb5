"""The chart as `helm` renders it: lint-clean, valid against the Kubernetes 1.37 and CRD schemas in every
ci/*-values.yaml scenario, one kind per template, hardened pods, a values schema that names the bad key."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import kubernetes_validate
import kubernetes_validate.utils
import pytest

from .conftest import CHART, SCENARIOS, Doc, crd_validators, helm, pod_specs, render

KUBERNETES = "1.37.0"


def test_the_validator_has_the_kubernetes_version_we_target() -> None:
    assert KUBERNETES in kubernetes_validate.utils.all_versions()  # 1.37.0 is also the newest it ships today


def test_helm_lint_strict_is_clean(scenario: Path) -> None:
    proc = helm("lint", "--strict", CHART, "-f", scenario, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    problems = [line for line in proc.stdout.splitlines() if line.startswith(("[WARNING]", "[ERROR]"))]
    assert problems == []


def test_every_object_is_valid(scenario: Path) -> None:
    docs = render(scenario)
    assert docs
    validators = crd_validators()
    for doc in docs:
        key = (doc.obj["apiVersion"], doc.kind)
        if key in validators:
            errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validators[key].iter_errors(doc.obj)]
            assert errors == [], f"{doc.kind} {doc.name}"
        else:
            kubernetes_validate.validate(doc.obj, KUBERNETES, strict=True)


def test_the_checks_can_fail() -> None:
    """Both validators reject a typo: kubernetes-validate in strict mode and the strict CRD schemas."""
    docs = render(CHART / "ci" / "monitoring-values.yaml")
    deployment = next(d.obj for d in docs if d.kind == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)
    for kind in ("ChampionChallenger", "PodMonitor", "ServiceMonitor"):
        doc = next(d.obj for d in docs if d.kind == kind)
        doc["spec"]["selektor"] = {}
        assert list(crd_validators()[(doc["apiVersion"], kind)].iter_errors(doc)), kind
    cc = next(d.obj for d in docs if d.kind == "ChampionChallenger")
    cc["spec"]["traffic"]["mode"] = "canary"
    assert list(crd_validators()[(cc["apiVersion"], "ChampionChallenger")].iter_errors(cc))


def test_every_template_renders_one_kind() -> None:
    kinds: dict[str, set[str]] = defaultdict(set)
    for scenario in SCENARIOS:
        for doc in render(scenario):
            kinds[doc.template].add(doc.kind)
    templates = {str(p.relative_to(CHART / "templates")) for p in (CHART / "templates").rglob("*.yaml")}
    never = templates - set(kinds) - {"prometheusrule.yaml", "dashboards-configmap.yaml"}  # need monitoring/ files
    assert never == set(), "templates no ci scenario renders"
    assert {t: k for t, k in kinds.items() if len(k) > 1} == {}


def test_every_pod_is_hardened(scenario: Path) -> None:
    for doc in render(scenario):
        for pod in pod_specs(doc.obj):
            where = f"{doc.kind} {doc.name}"
            sc = pod["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0, where
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            for c in pod["containers"]:
                csc = c["securityContext"]
                assert csc["allowPrivilegeEscalation"] is False and csc["privileged"] is False, where
                assert csc["readOnlyRootFilesystem"] is True, where
                assert csc["capabilities"] == {"drop": ["ALL"]}, where
                assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], where
            writable = {m["mountPath"] for c in pod["containers"] for m in c.get("volumeMounts", [])}
            if doc.obj["metadata"]["labels"].get("app.kubernetes.io/component") != "pushgateway":
                assert "/tmp" in writable, f"{where}: a read-only root needs a writable /tmp"


def test_serving_pods_probe_and_drain(scenario: Path) -> None:
    serving = [d for d in render(scenario) if d.kind == "Deployment"
               and d.obj["metadata"]["labels"]["app.kubernetes.io/component"] in ("router", "scorer")]
    assert serving
    for doc in serving:
        pod = doc.obj["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["livenessProbe"]["httpGet"]["path"] == c["startupProbe"]["httpGet"]["path"] == "/livez"
        drain = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert 0 < drain < pod["terminationGracePeriodSeconds"]
        assert pod["automountServiceAccountToken"] is False
        assert "replicas" not in doc.obj["spec"], "the HPA owns the replica count"


@pytest.mark.parametrize(("sets", "key"), [
    (["activeColor=purple"], "/activeColor"),
    (["scorer.autoscaling.minReplicas=0"], "/scorer/autoscaling/minReplicas"),
    (["router.sevice.port=80"], "sevice"),
    (["championChallenger.traffic.mode=canary"], "/championChallenger/traffic/mode"),
    (["championChallenger.traffic.challengerWeight=1.5"], "/championChallenger/traffic/challengerWeight"),
    (["images.pullPolicy=Sometimes"], "/images/pullPolicy"),
    (["mlflow.trackingUri=ftp://mlflow"], "/mlflow/trackingUri"),
    (["networkPolicy.egressPorts={70000}"], "/networkPolicy/egressPorts/0"),
    (["router.feedbackTokenSecret.name=Not_A_Name"], "/router/feedbackTokenSecret/name"),
    (["drift.window=hourly"], "/drift/window"),
    (["scorer.modelCache.registryRetrySeconds=0"], "/scorer/modelCache/registryRetrySeconds"),
    (["scorer.modelCache.claimName=Bad_Claim"], "/scorer/modelCache/claimName"),
    (["retrain.candidates=svm"], "/retrain/candidates"),
])
def test_bad_values_fail_naming_the_key(sets: list[str], key: str) -> None:
    args: list[str | Path] = ["template", "kingmaker", CHART]
    for s in sets:
        args += ["--set", s]
    proc = helm(*args, check=False)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr and key in proc.stderr, proc.stderr


def test_the_values_schema_is_strict_and_self_contained() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    refs: list[str] = []

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                assert node.get("additionalProperties") is False, path
            if "$ref" in node:
                refs.append(node["$ref"])
            for k, v in node.items():
                walk(v, f"{path}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}/{i}")

    walk(schema, "")
    assert refs and all(r.startswith("#/$defs/") for r in refs), "no remote $ref (Helm v4 would fetch it)"
    assert all(v.get("description") or "$ref" in v for v in schema["properties"].values() if v.get("type") != "object")


def test_the_chart_declares_the_kubernetes_it_needs() -> None:
    proc = helm("template", "kingmaker", CHART, "--kube-version", "1.29.0", check=False)
    assert proc.returncode != 0 and "kubeVersion" in proc.stderr


def test_notes_name_the_live_colour_and_how_to_switch_back() -> None:
    proc = helm("install", "kingmaker", CHART, "--dry-run=client", "-f", CHART / "ci" / "blue-green-values.yaml")
    notes = proc.stdout[proc.stdout.index("NOTES:"):]
    assert "Live colour: green (Router + Scorers 0.2.0)" in notes
    assert "not checked" in notes  # no cluster: says so instead of guessing
    assert "helm rollback kingmaker" in notes and "--set activeColor=blue" in notes


def _docs_by_name(docs: list[Doc], kind: str) -> dict[str, dict]:
    return {d.name: d.obj for d in docs if d.kind == kind}


def _scorer_pods(*sets: str) -> list[dict]:
    return [d.obj["spec"]["template"]["spec"] for d in render(sets=sets) if d.kind == "Deployment"
            and d.obj["metadata"]["labels"]["app.kubernetes.io/component"] == "scorer"]


def test_scorers_keep_a_model_cache_on_a_volume() -> None:
    """KINGMAKER_MODEL_CACHE on a mounted volume: an emptyDir by default, a claim when named, none when off."""
    pods = _scorer_pods()
    assert pods
    for pod in pods:
        (c,) = pod["containers"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["KINGMAKER_MODEL_CACHE"] == "/var/cache/kingmaker/models"
        assert env["KINGMAKER_REGISTRY_RETRY_SECONDS"] == "30"
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        assert mounts["model-cache"] == env["KINGMAKER_MODEL_CACHE"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["model-cache"]["emptyDir"] == {"sizeLimit": "2Gi"}
    for pod in _scorer_pods("scorer.modelCache.claimName=kingmaker-models"):
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["model-cache"] == {"name": "model-cache",
                                          "persistentVolumeClaim": {"claimName": "kingmaker-models"}}
    for pod in _scorer_pods("scorer.modelCache.enabled=false"):
        (c,) = pod["containers"]
        assert "KINGMAKER_MODEL_CACHE" not in {e["name"] for e in c["env"]}
        assert "model-cache" not in {v["name"] for v in pod["volumes"]}


def test_the_retrain_job_runs_weekly_with_the_controllers_label_delay() -> None:
    """The CronJob's command parses with the real CLI; its label delay is the resource's labelDelaySeconds (else
    the CRD default), so retraining counts exactly the labels the controller counts."""
    from kingmaker import cli

    def job(*sets: str) -> dict:
        (found,) = [d.obj for d in render(sets=sets) if d.kind == "CronJob" and d.name == "kingmaker-retrain"]
        return found

    default = job()
    assert default["spec"]["schedule"] == "17 3 * * 1" and default["spec"]["concurrencyPolicy"] == "Forbid"
    (c,) = default["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    args = cli.build_parser().parse_args(c["args"])
    assert (args.label_delay.total_seconds(), args.holdout, args.margin, args.replace) == (604800, 0.2, 0.0, False)
    (c,) = job("championChallenger.policy.labelDelaySeconds=3600", "retrain.replace=true")["spec"]["jobTemplate"][
        "spec"]["template"]["spec"]["containers"]
    args = cli.build_parser().parse_args(c["args"])
    assert (args.label_delay.total_seconds(), args.replace) == (3600, True)
    assert not [d for d in render(sets=["retrain.enabled=false"]) if d.name == "kingmaker-retrain"]
