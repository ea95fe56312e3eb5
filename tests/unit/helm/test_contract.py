"""What other parts rely on: the names, labels, env and mounts the promotion controller and the Router
read, checked on the rendered chart with the real parsers (bentos.config, the kingmaker CLI)."""

from __future__ import annotations

import posixpath
from typing import Any

import pytest
import yaml

from kingmaker import cli, router_config

from .conftest import CHART, SCENARIOS, Doc, one, pod_specs, render

BLUE_GREEN = CHART / "ci" / "blue-green-values.yaml"
SHADOW = CHART / "ci" / "shadow-values.yaml"


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_arm_deployments_carry_the_labels_the_controller_finds_them_by() -> None:
    docs = render(BLUE_GREEN)
    arms = [d.obj for d in docs if d.kind == "Deployment"
            and d.obj["metadata"]["labels"]["app.kubernetes.io/component"] == "scorer"]
    seen = set()
    for dep in arms:
        labels = dep["metadata"]["labels"]
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        arm, colour = labels["kingmaker.io/arm"], labels["kingmaker.io/color"]
        seen.add((arm, colour))
        for ls in (labels, pod_labels):
            assert ls["kingmaker.io/championchallenger"] == "fraud-detector"
            assert (ls["kingmaker.io/arm"], ls["kingmaker.io/color"]) == (arm, colour)
            assert ls["app.kubernetes.io/instance"] == "kingmaker" and ls["app.kubernetes.io/name"] == "kingmaker"
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        assert container["name"] == "scorer"
        env = _env(container)
        assert env["KINGMAKER_MODEL_URI"] == f"models:/fraud-detector@{arm}"  # an alias until the controller pins
        assert env["KINGMAKER_ARM"] == arm
        assert "kingmaker.io/model-version" not in (dep["spec"]["template"]["metadata"].get("annotations") or {})
    assert seen == {(a, c) for a in ("champion", "challenger") for c in ("blue", "green")}


def test_the_router_configmap_is_named_for_the_resource_and_parses_with_the_routers_parser() -> None:
    docs = render(SHADOW)
    cm = one(docs, "ConfigMap", "fraud-shadow-router")  # <championChallenger.name>-router
    cfg = router_config.parse(yaml.safe_load(cm["data"]["router.yaml"]), source="chart")
    assert (cfg.mode.value, cfg.challenger_weight, cfg.routing_field) == ("shadow", 0.0, "card_id")
    assert cfg.champion_url is None and cfg.challenger_url is None  # each colour's Router: from its environment
    assert one(docs, "ChampionChallenger", "fraud-shadow")["spec"]["traffic"]["mode"] == "shadow"


def test_each_routers_arms_are_its_own_colours_and_the_config_is_a_directory_mount() -> None:
    docs = render(BLUE_GREEN)
    services = {d.name: d.obj for d in docs if d.kind == "Service"}
    deployments = [d.obj for d in docs if d.kind == "Deployment"]
    routers = [d for d in deployments if d["metadata"]["labels"]["app.kubernetes.io/component"] == "router"]
    assert {r["metadata"]["labels"]["kingmaker.io/color"] for r in routers} == {"blue", "green"}
    for router in routers:
        colour = router["metadata"]["labels"]["kingmaker.io/color"]
        pod = router["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = _env(container)
        for arm in ("champion", "challenger"):
            host, port = env[f"KINGMAKER_{arm.upper()}_URL"].removeprefix("http://").split(":")
            service = services[host]
            assert service["spec"]["ports"][0]["port"] == int(port)
            targets = [d for d in deployments if _matches(service["spec"]["selector"],
                                                          d["spec"]["template"]["metadata"]["labels"])]
            assert [(t["metadata"]["labels"]["kingmaker.io/arm"], t["metadata"]["labels"]["kingmaker.io/color"])
                    for t in targets] == [(arm, colour)]
        mount = next(m for m in container["volumeMounts"] if m["name"] == "router-config")
        assert "subPath" not in mount, "a subPath mount never sees ConfigMap updates"
        assert posixpath.dirname(env["KINGMAKER_ROUTER_CONFIG"]) == mount["mountPath"]
        volume = next(v for v in pod["volumes"] if v["name"] == "router-config")
        assert volume["configMap"]["name"] == "fraud-detector-router"


def test_the_client_service_selects_the_active_colours_routers_only() -> None:
    docs = render(BLUE_GREEN)
    service = one(docs, "Service", "kingmaker")
    pods = [d.obj["spec"]["template"]["metadata"]["labels"] for d in docs if d.kind == "Deployment"]
    selected = [p for p in pods if _matches(service["spec"]["selector"], p)]
    assert selected and all(p["app.kubernetes.io/component"] == "router" and p["kingmaker.io/color"] == "green"
                            for p in selected)


def test_tokens_and_credentials_are_secret_references() -> None:
    docs = render(SHADOW)
    router = one(docs, "Deployment", "kingmaker-router-blue")["spec"]["template"]["spec"]
    env = _env(router["containers"][0])
    secrets = {v["name"]: v["secret"]["secretName"] for v in router["volumes"] if "secret" in v}
    assert secrets == {"feedback-token": "kingmaker-feedback", "scoring-token": "kingmaker-scoring",
                       "arm-token": "kingmaker-router-arms"}
    mounts = {m["name"]: m["mountPath"] for m in router["containers"][0]["volumeMounts"]}
    assert posixpath.dirname(env["KINGMAKER_FEEDBACK_TOKEN_FILE"]) == mounts["feedback-token"]
    assert posixpath.dirname(env["KINGMAKER_SCORING_TOKEN_FILE"]) == mounts["scoring-token"]
    refs = [r["secretRef"]["name"] for r in router["containers"][0]["envFrom"] if "secretRef" in r]
    assert refs == ["kingmaker-mlflow", "kingmaker-s3"]
    assert not [d for d in docs if d.kind == "Secret"], "the chart never carries a secret"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.name.removesuffix("-values.yaml"))
def test_every_kingmaker_command_parses_with_the_real_cli(scenario: Any) -> None:
    parser = cli.build_parser()
    commands = [c for d in render(scenario) for pod in pod_specs(d.obj) for c in pod["containers"]
                if c.get("command") == ["kingmaker"]]
    assert {c["args"][0] for c in commands} <= {"drift", "promote", "retrain"} and commands
    for c in commands:
        parser.parse_args(c["args"])  # exits (fails the test) on an unknown or malformed flag


def test_the_controller_role_covers_its_lease_and_lists_deployments() -> None:
    docs = render(CHART / "ci" / "plain-values.yaml")
    controller = one(docs, "Deployment", "kingmaker-controller")
    args = controller["spec"]["template"]["spec"]["containers"][0]["args"]
    lease = args[args.index("--lease-name") + 1]
    rules = one(docs, "Role", "kingmaker-controller")["rules"]
    assert any(lease in r.get("resourceNames", []) and "update" in r["verbs"] for r in rules)
    assert [r["verbs"] for r in rules if r["apiGroups"] == ["apps"]] == [["list", "patch"]]  # found by label
    assert controller["spec"]["template"]["spec"]["serviceAccountName"] == \
        one(docs, "RoleBinding", "kingmaker-controller")["subjects"][0]["name"]


def _pod_templates(docs: list[Doc], colour: str) -> dict[str, Any]:
    return {d.name: d.obj["spec"]["template"] for d in docs if d.kind == "Deployment"
            and d.obj["metadata"]["labels"].get("kingmaker.io/color") == colour}


def test_staging_a_new_release_on_one_colour_leaves_the_other_untouched() -> None:
    before = render(BLUE_GREEN)
    after = render(BLUE_GREEN, sets=["green.image.tag=0.3.0", "images.tag=0.3.0", "activeColor=blue"])
    assert _pod_templates(before, "blue") == _pod_templates(after, "blue")  # no restart of the live colour
    assert _pod_templates(before, "green") != _pod_templates(after, "green")


def test_a_settings_change_rolls_the_pods_and_a_traffic_change_does_not() -> None:
    base = render(BLUE_GREEN)
    settings = render(BLUE_GREEN, sets=["mlflow.trackingUri=http://other:5000"])
    traffic = render(BLUE_GREEN, sets=["router.config.salt=new-split"])  # hot-reloaded by the Routers

    def checksums(docs: list[Doc]) -> dict[str, str]:
        workloads = [d for d in docs if d.kind in ("Deployment", "CronJob")]
        return {d.name: d.obj["spec"].get("jobTemplate", d.obj)["spec"]["template"]["metadata"]["annotations"][
            "kingmaker.io/settings-checksum"] for d in workloads}

    changed = {n for n, c in checksums(settings).items() if c != checksums(base)[n]}
    assert changed == set(checksums(base)) and len(changed) == 9  # 2 colours x 3, controller, drift, retrain
    assert checksums(traffic) == checksums(base)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.name.removesuffix("-values.yaml"))
def test_each_serving_process_has_its_own_writable_bentoml_home(scenario: Any) -> None:
    """BentoML keeps its Prometheus multiprocess files in $BENTOML_HOME and empties them when a server starts:
    the image's default home is on the read-only root, so each serving container points it at its pod's /tmp."""
    for doc in render(scenario):
        if doc.kind != "Deployment" or doc.obj["metadata"]["labels"]["app.kubernetes.io/component"] not in (
                "router", "scorer"):
            continue
        (container,) = doc.obj["spec"]["template"]["spec"]["containers"]
        home = _env(container)["BENTOML_HOME"]
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert any(home.startswith(m + "/") for m in mounts), (doc.name, home, mounts)


def test_the_router_writes_its_segments_to_an_emptydir_and_trusts_the_scorers_with_its_own_token() -> None:
    docs = render(SHADOW)
    router = one(docs, "Deployment", "kingmaker-router-blue")["spec"]["template"]["spec"]
    env = _env(router["containers"][0])
    mounts = {m["name"]: m["mountPath"] for m in router["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in router["volumes"]}
    assert env["KINGMAKER_LOG_SEGMENT_DIR"] == mounts["segments"]
    assert volumes["segments"]["emptyDir"] == {"sizeLimit": "2Gi"} and env["KINGMAKER_LOG_FSYNC"] == "interval"
    for name in ("kingmaker-router-blue", "kingmaker-champion-blue", "kingmaker-challenger-blue"):
        pod = one(docs, "Deployment", name)["spec"]["template"]["spec"]
        env = _env(pod["containers"][0])
        mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "arm-token")
        assert posixpath.dirname(env["KINGMAKER_ARM_TOKEN_FILE"]) == mount["mountPath"], name
        assert next(v for v in pod["volumes"] if v["name"] == "arm-token")["secret"]["secretName"] == "kingmaker-router-arms"
    cfg = router_config.parse(yaml.safe_load(one(docs, "ConfigMap", "fraud-shadow-router")["data"]["router.yaml"]))
    assert cfg.champion_fallback.value == "challenger"
    plain = render(CHART / "ci" / "minimal-values.yaml")
    scorer = next(d.obj for d in plain if d.kind == "Deployment" and "champion" in d.name)["spec"]["template"]["spec"]
    assert "KINGMAKER_ARM_TOKEN_FILE" not in _env(scorer["containers"][0])  # no Secret named: open, as before
