"""The controller's metrics are in the catalog, follow its conventions, and can be created."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from kingmaker.catalog import CATALOG, CONTROLLER, Kind, create


def test_controller_metrics_are_catalogued() -> None:
    for spec in CONTROLLER:
        assert CATALOG[spec.name] is spec
        assert spec.name.startswith("kingmaker_controller_")
        # every series names its resource, except leadership, which belongs to the process
        assert spec.labels[:1] == (() if spec.name == "kingmaker_controller_leader" else ("championchallenger",))
    assert CATALOG["kingmaker_controller_decisions"].labels == ("championchallenger", "outcome", "reason")
    assert CATALOG["kingmaker_controller_decisions"].kind is Kind.COUNTER


def test_controller_metrics_can_be_created_and_exposed() -> None:
    registry = CollectorRegistry()
    for spec in CONTROLLER:
        create(spec, registry)
    names = {m.name for m in registry.collect()}
    assert "kingmaker_controller_decisions" in names  # exposed as ..._total
