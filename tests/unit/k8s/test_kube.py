"""The Kubernetes adapter: what it sends (paths, content types, bodies, preconditions) through the official client,
against a recording fake API server (fake_kube.py). Also a whole promotion in Kubernetes mode, interrupted."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import urllib3
import yaml

from k8s.act import ControllerMetrics, Ports
from k8s.controller import Controller
from k8s.kube import (
    MODEL_URI_ENV,
    VERSION_ANNOTATION,
    Conflict,
    Kube,
    KubeResource,
    KubeServing,
    NotFound,
    ServingNames,
    deployment_patch,
)
from k8s.resource import Phase
from k8s.sources.registry import MlflowRegistry
from k8s.state import Arms, Status
from kingmaker import router_config
from kingmaker.errors import PermanentError, TemporaryError
from kingmaker.roles import Mode
from tests.conftest import SYNTHETIC_POINT

from .conftest import T0, Home, sources, traffic_frame
from .fake_kube import NS, FakeApiServer, deployment, router_configmap
from .test_state import EXAMPLE, assert_valid

NAME = "fraud-detector"
NOW = T0 + 2500 + 3600 + 120


def cr(**policy: Any) -> dict[str, Any]:
    doc = copy.deepcopy(EXAMPLE)
    doc["spec"]["traffic"] = {"challengerWeight": 0.1, "mode": "shadow"}
    doc["spec"]["policy"] = {"labelDelaySeconds": 3600, "minLabelledPerArm": 500, "minPositivesPerArm": 10,
                             "approval": "automatic", **SYNTHETIC_POINT, **policy}
    return doc


@pytest.fixture
def server() -> FakeApiServer:
    s = FakeApiServer()
    s.put("cc", cr())
    for colour in ("blue", "green"):  # the chart's two colours: both follow the controller
        s.put("deployment", deployment("champion", "1", colour=colour))
        s.put("deployment", deployment("challenger", "2", colour=colour))
    s.put("deployment", deployment("champion", "7", cc="other-model"))  # another resource's arm: not ours
    s.put("configmap", router_configmap(f"{NAME}-router", "mode: shadow\nchallenger_weight: 0.1\nsalt: pepper\n"))
    return s


def test_status_goes_to_the_status_subresource_as_a_merge_patch(server: FakeApiServer, kube: Kube) -> None:
    resource = KubeResource(kube, NAME, identity="me")
    spec, status = resource.load()
    assert spec.name == NAME and spec.uid == f"uid-{NAME}" and status == Status()
    rv = server.get("cc", NAME)["metadata"]["resourceVersion"]
    new = Status(phase=Phase.EVALUATING, champion_version="1", challenger_version="2", looks=1)
    resource.save(new)
    (patch,) = server.sent("PATCH")
    assert patch.path == f"/apis/kingmaker.io/v1alpha1/namespaces/{NS}/championchallengers/{NAME}/status"
    assert patch.headers["Content-Type"] == "application/merge-patch+json"
    assert patch.query == {"fieldManager": ["kingmaker-controller"]}
    assert patch.body["metadata"] == {"resourceVersion": rv}
    assert patch.body["status"]["phase"] == "Evaluating" and patch.body["status"]["lastEvaluation"] is None
    stored = server.get("cc", NAME)["status"]
    assert Status.from_dict(stored) == new and "lastEvaluation" not in stored
    assert_valid(Status.from_dict(stored))
    # a cleared version really disappears (merge patch null)
    resource.save(Status(phase=Phase.PROMOTED, champion_version="2"))
    assert "challengerVersion" not in server.get("cc", NAME)["status"]


def test_a_409_on_status_rereads_and_retries(server: FakeApiServer, kube: Kube) -> None:
    resource = KubeResource(kube, NAME, identity="me")
    resource.load()
    kube.approve(NAME, "2", None)  # someone else writes the object meanwhile: our resourceVersion is stale
    server.requests.clear()
    resource.save(Status(phase=Phase.EVALUATING))
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in server.requests] == [
        ("PATCH", "status"), ("GET", NAME), ("PATCH", "status")]
    assert server.requests[0].body["metadata"]["resourceVersion"] != server.requests[2].body["metadata"]["resourceVersion"]
    assert server.get("cc", NAME)["status"]["phase"] == "Evaluating"
    assert server.get("cc", NAME)["spec"]["approvedChallengerVersion"] == "2"


def test_persistent_conflicts_give_up_as_temporary(server: FakeApiServer, kube: Kube) -> None:
    resource = KubeResource(kube, NAME, identity="me")
    resource.load()
    server.failures = [("PATCH", "/status$", 409)] * 5
    with pytest.raises(Conflict):
        resource.save(Status())
    assert isinstance(Conflict("x"), TemporaryError)


def test_approve_patches_the_spec(server: FakeApiServer, kube: Kube) -> None:
    kube.approve(NAME, "2", server.get("cc", NAME)["metadata"]["resourceVersion"])
    (patch,) = server.sent("PATCH")
    assert patch.path.endswith(f"/championchallengers/{NAME}")
    assert patch.body["spec"] == {"approvedChallengerVersion": "2"}
    assert server.get("cc", NAME)["metadata"]["generation"] == 2  # a spec change: the controller notices


def test_point_finds_the_arms_by_label_and_patches_every_colour(server: FakeApiServer, kube: Kube) -> None:
    serving = KubeServing(kube, ServingNames().resolve(NAME), "fraud-detector")
    assert serving.point(Arms("2", None)) is True
    (listed,) = server.sent("GET", "deployments")
    assert listed.path == f"/apis/apps/v1/namespaces/{NS}/deployments"
    assert listed.query["labelSelector"] == [f"kingmaker.io/championchallenger={NAME},kingmaker.io/arm=champion"]
    patches = server.sent("PATCH")
    assert [p.path.rsplit("/", 1)[-1] for p in patches] == [f"{NAME}-champion-blue", f"{NAME}-champion-green"]
    for patch in patches:
        assert patch.headers["Content-Type"] == "application/strategic-merge-patch+json"
        assert patch.query == {"fieldManager": ["kingmaker-controller"]}
        assert patch.body == deployment_patch("scorer", "models:/fraud-detector/2", "2")
        assert patch.body["spec"]["template"]["metadata"]["annotations"] == {VERSION_ANNOTATION: "2"}
    for colour in ("blue", "green"):
        template = server.get("deployment", f"{NAME}-champion-{colour}")["spec"]["template"]
        (scorer, sidecar) = template["spec"]["containers"]
        assert {e["name"]: e["value"] for e in scorer["env"]} == {"KINGMAKER_ARM": "x",
                                                                   MODEL_URI_ENV: "models:/fraud-detector/2"}
        assert sidecar == {"name": "sidecar", "image": "proxy:1"}
        assert server.get("deployment", f"{NAME}-challenger-{colour}")["spec"]["template"]["metadata"][
            "annotations"][VERSION_ANNOTATION] == "2"  # no challenger: its Deployments are left alone
    assert server.get("deployment", "other-model-champion-blue")["spec"]["template"]["metadata"]["annotations"][
        VERSION_ANNOTATION] == "7"
    # already pointed: nothing is sent but the list
    server.requests.clear()
    assert serving.point(Arms("2", None)) is False
    assert server.sent("PATCH") == []


def test_point_moves_a_new_challenger_on_every_colour_and_only_what_differs(server: FakeApiServer,
                                                                           kube: Kube) -> None:
    server.put("deployment", deployment("challenger", "3", colour="green"))  # e.g. an interrupted earlier run
    serving = KubeServing(kube, ServingNames().resolve(NAME), "fraud-detector")
    assert serving.point(Arms("1", "3")) is True
    assert [p.path.rsplit("/", 1)[-1] for p in server.sent("PATCH")] == [f"{NAME}-challenger-blue"]
    assert {server.get("deployment", f"{NAME}-challenger-{c}")["spec"]["template"]["metadata"]["annotations"][
        VERSION_ANNOTATION] for c in ("blue", "green")} == {"3"}


def test_no_champion_deployment_is_a_readable_permanent_error_and_no_challenger_is_normal(
        server: FakeApiServer, kube: Kube) -> None:
    for colour in ("blue", "green"):  # scorer.challenger.enabled=false: the chart makes no challenger arm
        del server.objects[("deployment", f"{NAME}-challenger-{colour}")]
    serving = KubeServing(kube, ServingNames().resolve(NAME), "fraud-detector")
    assert serving.point(Arms("1", "2")) is False
    with pytest.raises(PermanentError) as missing:
        KubeServing(kube, ServingNames().resolve("fraud-shadow"), "fraud-detector").point(Arms("1", None))
    assert str(missing.value) == (
        f"no Deployment labelled kingmaker.io/championchallenger=fraud-shadow,kingmaker.io/arm=champion in "
        f"namespace {NS}: the champion arm is not installed (helm install the chart)")


def test_point_refuses_a_deployment_without_the_container(server: FakeApiServer, kube: Kube) -> None:
    serving = KubeServing(kube, ServingNames(container="model").resolve(NAME), "fraud-detector")
    with pytest.raises(PermanentError, match="no container 'model'"):
        serving.point(Arms("2", None))


def test_route_rewrites_router_yaml_keeping_other_keys_and_retries_on_409(server: FakeApiServer, kube: Kube) -> None:
    serving = KubeServing(kube, ServingNames().resolve(NAME), "fraud-detector")
    server.failures = [("PATCH", "configmaps", 409)]
    assert serving.route(Mode.SPLIT, 0.0) is True
    patches = server.sent("PATCH", "configmaps")
    assert len(patches) == 2 and len(server.sent("GET", "configmaps")) == 2  # conflict -> re-read -> retry
    assert patches[-1].headers["Content-Type"] == "application/strategic-merge-patch+json"
    assert patches[0].body["metadata"]["resourceVersion"] != patches[1].body["metadata"]["resourceVersion"] or \
        patches[0].body == patches[1].body  # the retry carries the re-read object's resourceVersion
    cfg = router_config.parse(yaml.safe_load(server.get("configmap", f"{NAME}-router")["data"]["router.yaml"]))
    assert (cfg.mode, cfg.challenger_weight, cfg.salt) == (Mode.SPLIT, 0.0, "pepper")
    server.requests.clear()
    assert serving.route(Mode.SPLIT, 0.0) is False and server.sent("PATCH") == []


def test_route_rejects_an_invalid_router_config(server: FakeApiServer, kube: Kube) -> None:
    server.put("configmap", router_configmap(f"{NAME}-router", "mode: canary\n"))
    with pytest.raises(PermanentError, match="mode"):
        KubeServing(kube, ServingNames().resolve(NAME), "fraud-detector").route(Mode.SPLIT, 0.0)


def test_events_reference_the_resource(server: FakeApiServer, kube: Kube) -> None:
    resource = KubeResource(kube, NAME, identity="controller-0_1")
    resource.load()
    resource.event("Normal", "Promoted", "x" * 5000)
    (post,) = server.sent("POST", "events")
    body = post.body
    assert post.path == f"/apis/events.k8s.io/v1/namespaces/{NS}/events"
    assert body["regarding"] == {"apiVersion": "kingmaker.io/v1alpha1", "kind": "ChampionChallenger", "name": NAME,
                                 "namespace": NS, "uid": f"uid-{NAME}",
                                 "resourceVersion": server.get("cc", NAME)["metadata"]["resourceVersion"]}
    assert (body["type"], body["reason"], body["action"]) == ("Normal", "Promoted", "Promote")
    assert body["reportingController"] == "kingmaker.io/promotion-controller"
    assert body["reportingInstance"] == "controller-0_1" and len(body["note"]) <= 1000
    name = body["metadata"]["name"]  # <object>.<hex nanoseconds>, as client-go names Events: a valid name
    assert re.fullmatch(rf"{NAME}\.[0-9a-f]{{16}}", name) and "generateName" not in body["metadata"]
    assert "eventTime" in body


def test_event_failures_are_logged_not_raised(server: FakeApiServer, kube: Kube) -> None:
    server.failures = [("POST", "events", 403)]
    KubeResource(kube, NAME, identity="me").event("Warning", "RolledBack", "m")  # no exception


@pytest.mark.parametrize(("code", "error"), [(403, PermanentError), (422, PermanentError), (404, NotFound),
                                             (500, TemporaryError), (429, TemporaryError), (409, Conflict)])
def test_api_errors_are_classified(server: FakeApiServer, kube: Kube, code: int, error: type[Exception]) -> None:
    server.failures = [("GET", "championchallengers", code)]
    with pytest.raises(error, match=str(code)):
        kube.get(NAME)


def test_an_unreachable_api_server_is_temporary(kube: Kube, monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*args: Any, **kwargs: Any) -> Any:
        raise urllib3.exceptions.MaxRetryError(None, "https://kube.test", "connection refused")  # type: ignore[arg-type]

    monkeypatch.setattr(kube.api_client.rest_client, "request", down)
    with pytest.raises(TemporaryError, match="unreachable"):
        kube.list_resources()


def test_requests_carry_a_timeout(server: FakeApiServer, kube: Kube, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    original = server.request

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("_request_timeout"))
        return original(*args, **kwargs)

    monkeypatch.setattr(kube.api_client.rest_client, "request", spy)
    kube.get(NAME)
    assert seen == [3.0]


# --- a promotion in Kubernetes mode ------------------------------------------------------------------

def kube_controller(server: FakeApiServer, kube: Kube, home: Home, registry: MlflowRegistry) -> Controller:
    resource = KubeResource(kube, NAME, identity="me")
    ports = Ports(registry, KubeServing(kube, ServingNames().resolve(NAME), "fraud-detector"), resource,
                  ControllerMetrics())
    return Controller(resource, ports, sources(home), clock=lambda: NOW)


def test_kubernetes_promotion_interrupted_by_the_api_server_then_finished(
        server: FakeApiServer, kube: Kube, home: Home, registry: MlflowRegistry) -> None:
    preds, labels = traffic_frame(2500, champion="1", challenger="2")
    home.write(preds, labels)
    controller = kube_controller(server, kube, home, registry)
    # the green champion Deployment cannot be patched right now (the API server is overloaded)
    server.failures = [("PATCH", f"deployments/{NAME}-champion-green$", 503)]
    assert controller.run_once() is None  # a temporary error: logged, retried next tick
    assert registry.aliases()["champion"] == "2"  # the alias moved ...
    held = server.get("cc", NAME)["status"]
    assert held["phase"] == "Promoting"  # ... and the intent is on the resource, with why it waits
    reachable = next(c for c in held["conditions"] if c["type"] == "Reachable")
    assert reachable["status"] == "False" and "503" in reachable["message"]
    assert [server.get("deployment", f"{NAME}-champion-{c}")["spec"]["template"]["metadata"]["annotations"][
        VERSION_ANNOTATION] for c in ("blue", "green")] == ["2", "1"]  # half way

    result = kube_controller(server, kube, home, registry).run_once()  # next tick, maybe another replica
    assert result is not None and result.resumed
    status = server.get("cc", NAME)["status"]
    assert status["phase"] == "Promoted" and status["championVersion"] == "2" and "challengerVersion" not in status
    assert [h["action"] for h in status["history"]] == ["Promoted"]
    assert_valid(Status.from_dict(status))
    for colour in ("blue", "green"):
        champion = server.get("deployment", f"{NAME}-champion-{colour}")["spec"]["template"]
        assert champion["metadata"]["annotations"][VERSION_ANNOTATION] == "2"
    cfg = router_config.parse(yaml.safe_load(server.get("configmap", f"{NAME}-router")["data"]["router.yaml"]))
    assert (cfg.mode, cfg.challenger_weight) == (Mode.SPLIT, 0.0)
    assert next(c for c in status["conditions"] if c["type"] == "Reachable")["status"] == "True"
    assert [e["reason"] for e in server.events] == ["ChallengerBetter", "DependencyUnavailable", "Promoted"]
    assert registry.aliases() == {"champion": "2", "previous-champion": "1"}


def test_a_bad_spec_puts_the_resource_in_error(server: FakeApiServer, kube: Kube, home: Home,
                                               registry: MlflowRegistry) -> None:
    bad = cr()
    bad["spec"]["policy"]["alpha"] = 0.9  # the CRD would refuse it; an older CRD might not
    server.put("cc", bad)
    assert kube_controller(server, kube, home, registry).run_once() is None
    status = server.get("cc", NAME)["status"]
    assert status["phase"] == "Error"
    assert "spec.policy.alpha" in next(c for c in status["conditions"] if c["type"] == "Ready")["message"]



# --- RBAC: the Role grants what the adapter sends, nothing is missing -----------------------------------

def _rbac_rules() -> list[dict[str, Any]]:
    from pathlib import Path

    docs = list(yaml.safe_load_all((Path(__file__).resolve().parents[3] / "k8s" / "rbac.yaml").read_text()))
    (role,) = [d for d in docs if d["kind"] == "Role"]
    return list(role["rules"])


def _attributes(method: str, path: str, query: dict[str, list[str]]) -> tuple[str, str, str, str | None]:
    """(apiGroup, resource[/subresource], verb, name) of one namespaced request, as the API server authorizes it."""
    parts = path.strip("/").split("/")
    group = "" if parts[0] == "api" else parts[1]
    rest = parts[parts.index("namespaces") + 2:]
    resource, name = rest[0], rest[1] if len(rest) > 1 else None
    if len(rest) > 2:
        resource = f"{resource}/{rest[2]}"
    verb = {"GET": "get" if name else "watch" if query.get("watch") == ["true"] else "list", "POST": "create",
            "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]
    return group, resource, verb, name


def _allowed(rules: list[dict[str, Any]], group: str, resource: str, verb: str, name: str | None) -> bool:
    return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
               and (not r.get("resourceNames") or name in r["resourceNames"]) for r in rules)


def test_rbac_allows_every_request_of_a_promotion_and_an_election(
        server: FakeApiServer, kube: Kube, home: Home, registry: MlflowRegistry) -> None:
    from k8s.lease import LeaseElector

    preds, labels = traffic_frame(2500, champion="1", challenger="2")
    home.write(preds, labels)
    elector = LeaseElector(kube, "kingmaker-controller", "me")
    assert elector.try_acquire_or_renew() and elector.try_acquire_or_renew()
    server.watches = [[]]
    assert list(kube.watch(kube.list_resources()[1], 60)) == []
    assert kube_controller(server, kube, home, registry).run_once() is not None
    rules = _rbac_rules()
    sent = {_attributes(r.method, r.path, r.query) for r in server.requests}
    assert {(g, res, v) for g, res, v, _ in sent} >= {
        ("kingmaker.io", "championchallengers", "list"), ("kingmaker.io", "championchallengers", "watch"),
        ("kingmaker.io", "championchallengers/status", "patch"), ("apps", "deployments", "list"),
        ("apps", "deployments", "patch"),
        ("", "configmaps", "patch"), ("events.k8s.io", "events", "create"), ("coordination.k8s.io", "leases", "update")}
    denied = sorted(a for a in sent if not _allowed(rules, *a))
    assert denied == []
    # and the check can fail: approving is not the controller's job
    assert not _allowed(rules, "kingmaker.io", "championchallengers", "patch", NAME)
