"""The generated rules and dashboards: up to date with their source, plain rule files, an existing runbook for
every alert, promtool tests for every rule, only catalogued metrics, and dashboards an SRE can use anywhere
(a data-source variable, the resource variables, a unit and a description on every panel)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from k8s.sources.prometheus import GuardrailQueries
from kingmaker.catalog import CATALOG, Kind
from monitoring import boards, generate, ruleset

ROOT = generate.ROOT
RULE_FILES = sorted((ROOT / "rules").glob("*.yaml"))
DASHBOARD_FILES = sorted((ROOT / "dashboards").glob("*.json"))


def rules_on_disk() -> Iterator[dict[str, Any]]:
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            yield from group["rules"]


def dashboards_on_disk() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in DASHBOARD_FILES]


def test_the_committed_files_are_what_the_source_generates() -> None:
    stale = generate.stale(generate.generated())
    assert stale == [], f"regenerate with `python -m monitoring.generate`: {[str(p) for p in stale]}"
    assert generate.main(["--check"]) == 0


def test_check_names_a_file_that_differs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    for folder in ("rules", "dashboards"):
        (tmp_path / folder).mkdir()
    files = {tmp_path / p.relative_to(ROOT): text for p, text in generate.generated().items()}
    monkeypatch.setattr(generate, "ROOT", tmp_path)
    monkeypatch.setattr(generate, "generated", lambda: files)
    assert generate.main([]) == 0
    assert generate.main(["--check"]) == 0
    edited = tmp_path / "dashboards" / "overview.json"
    edited.write_text(edited.read_text().replace("Overview", "Overview (edited by hand)"))
    assert generate.main(["--check"]) == 1
    assert "dashboards/overview.json is not what monitoring/ generates" in capsys.readouterr().err


def test_rule_files_are_plain_prometheus_rule_files() -> None:
    assert [p.name for p in RULE_FILES] == sorted(ruleset.FILES)
    for path in RULE_FILES:
        doc = yaml.safe_load(path.read_text())
        assert list(doc) == ["groups"], path  # no PrometheusRule wrapper: the chart adds it
        for group in doc["groups"]:
            assert set(group) == {"name", "rules"}
            for rule in group["rules"]:
                assert ("record" in rule) != ("alert" in rule) and rule["expr"]


def test_recording_rules_follow_level_metric_operations() -> None:
    recorded = {r.record for r in ruleset.records()}
    for rule in rules_on_disk():
        if "record" in rule:
            level, name, operation = rule["record"].split(":")
            assert level.startswith("namespace_championchallenger") and name.startswith("kingmaker_") and operation
            if metric_names(rule["expr"]) <= recorded:
                continue  # built from recorded series, which are per resource already
            for label in ("namespace", "championchallenger"):  # every series stays per resource
                assert re.search(rf"by \([^)]*\b{label}\b", rule["expr"]), rule["record"]


def test_every_alert_has_severity_summary_description_and_a_runbook_in_the_repository() -> None:
    alerts = [r for r in rules_on_disk() if "alert" in r]
    assert len(alerts) == len(ruleset.alerts()) >= 13
    for rule in alerts:
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        notes = rule["annotations"]
        assert set(notes) == {"summary", "description", "runbook_url"}, name
        assert notes["summary"] and len(notes["description"]) > len(notes["summary"])
        assert notes["runbook_url"] == f"{ruleset.RUNBOOK_BASE}/{name}.md"
        runbook = ROOT / "runbooks" / f"{name}.md"
        assert runbook.exists(), f"{name}: no {runbook}"
        text = runbook.read_text()
        assert text.startswith(f"# {name}\n")
        for section in ("## What it means", "## How to confirm", "## What to do"):
            assert section in text, f"{runbook.name} lacks {section}"
    assert {p.stem for p in (ROOT / "runbooks").glob("*.md")} == {r["alert"] for r in alerts}  # no orphans
    assert ruleset.RUNBOOK_BASE.endswith("/monitoring/runbooks")


def test_promtool_tests_give_every_recording_rule_a_value_and_every_alert_both_outcomes() -> None:
    valued: set[str] = set()
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in sorted((ROOT / "tests").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        assert sorted(doc["rule_files"]) == sorted(f"../rules/{name}" for name in ruleset.FILES), path
        for case in doc["tests"]:
            for t in case.get("promql_expr_test", []):
                if t["exp_samples"]:
                    valued.add(t["expr"])
            for t in case.get("alert_rule_test", []):
                (fired if t["exp_alerts"] else quiet).add(t["alertname"])
    records = {r.record for r in ruleset.records()}
    alerts = {a.alert for a in ruleset.alerts()}
    assert records - valued == set(), "recording rules without an expected value in monitoring/tests"
    assert alerts - fired == set(), "alerts never seen firing in monitoring/tests"
    assert alerts - quiet == set(), "alerts never seen not firing in monitoring/tests"


def metric_names(expr: str) -> set[str]:
    """Every series name a PromQL expression selects, from Prometheus's grammar (promql-parser)."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def test_the_name_extractor_sees_through_functions_and_operators() -> None:
    assert metric_names('histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="$y"}[5m]))) > on (z) group_left '
                        'max(b:c:d) and absent(e) or vector(1)') == {"a_bucket", "b:c:d", "e"}


def catalogued() -> set[str]:
    names = set()
    for spec in CATALOG.specs:
        names.add(spec.exposed_name)
        if spec.kind is Kind.HISTOGRAM:
            names |= {spec.name + s for s in ("_bucket", "_count", "_sum")}
    return names


def test_rules_and_panels_name_only_catalogued_metrics_or_recorded_series() -> None:
    known = catalogued() | {r.record for r in ruleset.records()}
    used: dict[str, set[str]] = {}
    for rule in rules_on_disk():
        used[rule.get("record") or rule["alert"]] = metric_names(rule["expr"])
    for model in dashboards_on_disk():
        for q in boards.queries(model):
            used[f"{q.dashboard} / {q.where}"] = metric_names(q.expr)
    unknown = {where: names - known for where, names in used.items() if names - known}
    assert unknown == {}
    assert sum(len(n) for n in used.values()) > 100  # the check did look at the queries


def test_the_error_rate_rule_is_the_controllers_guardrail_definition() -> None:
    controller = GuardrailQueries().error_rate()
    assert f'outcome=~"{ruleset.FAILED_OUTCOMES}"' in controller and f'outcome!~"{ruleset.NOT_CALLS}"' in controller
    assert f'outcome=~"{ruleset.FAILED_OUTCOMES}"' in ruleset.UPSTREAM_FAILED.expr
    assert f'outcome!~"{ruleset.NOT_CALLS}"' in ruleset.UPSTREAM_CALLS.expr


def test_dashboards_select_one_resource_through_variables_and_give_every_panel_a_unit() -> None:
    models = dashboards_on_disk()
    assert {m["uid"] for m in models} == {"kingmaker-overview", "kingmaker-champion-challenger", "kingmaker-drift",
                                          "kingmaker-controller", "kingmaker-serving-internals"}
    for model in models:
        variables = {v["name"]: v for v in model["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        assert {"namespace", "championchallenger"} <= set(variables)
        uids = set(re.findall(r'"uid": "([^"]*)"', json.dumps(model)))
        assert uids == {model["uid"], "${datasource}"}, "a hard-coded data source"
        panels = [p for p in model["panels"] if p["type"] != "row"]
        assert panels
        for p in panels:
            where = f"{model['title']} / {p['title']}"
            assert p["fieldConfig"]["defaults"].get("unit"), f"{where}: no unit"
            assert p.get("description"), f"{where}: no description"
            assert p["datasource"]["uid"] == "${datasource}"
            for t in p["targets"]:
                assert t["datasource"]["uid"] == "${datasource}"
                assert 'namespace="$namespace"' in t["expr"], where
                if "kingmaker_controller_leader" not in t["expr"]:  # leadership belongs to a process
                    assert 'championchallenger="$championchallenger"' in t["expr"], where


def test_promotions_and_rollbacks_are_annotations_of_the_experiment_dashboards() -> None:
    by_uid = {m["uid"]: m for m in dashboards_on_disk()}
    for uid in ("kingmaker-overview", "kingmaker-champion-challenger"):
        names = {a["name"] for a in by_uid[uid]["annotations"]["list"]}
        assert names == {"Promotions", "Rollbacks"}


def test_queries_lists_panels_annotations_and_variables() -> None:
    model = boards.build(boards.boards()[1])
    found = list(boards.queries(model))
    wheres = {q.where for q in found}
    assert "annotation: Promotions" in wheres and "variable: championchallenger" in wheres
    variable = next(q for q in found if q.where == "variable: championchallenger")
    assert (variable.expr, variable.label) == ('kingmaker_router_challenger_weight{namespace="$namespace"}',
                                              "championchallenger")
    assert boards.substitute('x{a="$namespace", b="${championchallenger}"}',
                             {"namespace": "ns", "championchallenger": "cc"}) == 'x{a="ns", b="cc"}'
