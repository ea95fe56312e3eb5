"""Blue-green without a cluster: what renders, what is refused, and the chart saying it did not check.

The switch check itself reads the cluster (`lookup`); here there is none, so these tests pin the
offline behaviour. The e2e tier runs the same chart against a real API server (.ci/deploy)."""

from __future__ import annotations

from .conftest import CHART, helm, one, render

BLUE_GREEN = CHART / "ci" / "blue-green-values.yaml"


def test_a_switch_renders_offline_and_says_the_target_was_not_checked() -> None:
    docs = render(BLUE_GREEN)
    service = one(docs, "Service", "kingmaker")
    assert service["spec"]["selector"]["kingmaker.io/color"] == "green"
    check = service["metadata"]["annotations"]["kingmaker.io/switch-check"]
    assert check.startswith("offline:") and "whether green is ready was not checked" in check
    names = {d.name for d in docs if d.kind == "Deployment"}
    assert {f"kingmaker-{role}-{c}" for role in ("router", "champion", "challenger") for c in ("blue", "green")} <= names


def test_the_idle_colour_keeps_its_size_for_the_configured_delay() -> None:
    docs = render(BLUE_GREEN)
    windows = {d.name: d.obj["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"]
               for d in docs if d.kind == "HorizontalPodAutoscaler"}
    assert {n: w for n, w in windows.items() if n.endswith("-blue")} == {
        f"kingmaker-{r}-blue": 1200 for r in ("router", "champion", "challenger")}
    assert {w for n, w in windows.items() if n.endswith("-green")} == {300}
    for d in docs:
        if d.kind == "HorizontalPodAutoscaler":
            target = d.obj["spec"]["scaleTargetRef"]
            assert one(docs, target["kind"], target["name"])  # every HPA scales a Deployment of the chart


def test_the_images_follow_each_colour() -> None:
    docs = render(BLUE_GREEN)
    images = {d.name: d.obj["spec"]["template"]["spec"]["containers"][0]["image"] for d in docs
              if d.kind == "Deployment"}
    assert images["kingmaker-router-blue"] == "ghcr.io/acme/kingmaker-router:0.1.0"
    assert images["kingmaker-champion-green"] == "ghcr.io/acme/kingmaker-scorer:0.2.0"
    assert images["kingmaker-controller"] == "ghcr.io/acme/kingmaker:0.2.0"


def test_the_active_colour_must_be_enabled() -> None:
    proc = helm("template", "kingmaker", CHART, "--set", "activeColor=green", check=False)
    assert proc.returncode != 0
    assert "activeColor is green but green.enabled is false" in proc.stderr


def test_one_colour_renders_without_the_other() -> None:
    docs = render(sets=["activeColor=green", "green.enabled=true", "blue.enabled=false"])
    colours = {d.obj["metadata"]["labels"].get("kingmaker.io/color") for d in docs if d.kind == "Deployment"}
    assert colours == {"green", None}  # None: the controller
