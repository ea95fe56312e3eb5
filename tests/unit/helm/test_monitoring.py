"""The PrometheusRule and the dashboard ConfigMaps come from files/monitoring (copies of monitoring/, made
by .ci/manifests): with files they render from them, without files they render nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .conftest import CHART, crd_validators, helm, one, render

MONITORING = CHART / "ci" / "monitoring-values.yaml"
RULES = """\
groups:
  - name: kingmaker-test
    rules:
      - alert: KingmakerRouterDown
        expr: up{job="kingmaker"} == 0
        for: 5m
        labels: {severity: critical}
        annotations:
          summary: "Router {{ $labels.instance }} is down"
          runbook_url: https://example.invalid/runbooks/router-down
"""


@pytest.fixture
def chart_with_files(tmp_path: Path) -> Path:
    chart = tmp_path / "kingmaker"
    shutil.copytree(CHART, chart)
    shutil.rmtree(chart / "files" / "monitoring", ignore_errors=True)
    (chart / "files" / "monitoring" / "rules").mkdir(parents=True)
    (chart / "files" / "monitoring" / "dashboards").mkdir(parents=True)
    (chart / "files" / "monitoring" / "rules" / "serving.yaml").write_text(RULES)
    (chart / "files" / "monitoring" / "rules" / "drift.yaml").write_text(
        "groups:\n  - name: kingmaker-drift\n    rules:\n      - record: kingmaker:drift:max\n"
        "        expr: max(kingmaker_drift_feature_psi)\n")
    (chart / "files" / "monitoring" / "dashboards" / "kingmaker_serving.json").write_text(
        json.dumps({"title": "kingmaker serving", "panels": [{"expr": 'sum(rate(x{arm="challenger"}[5m]))'}]}))
    return chart


def test_the_rule_files_become_one_prometheusrule(chart_with_files: Path) -> None:
    docs = render(MONITORING, chart=chart_with_files)
    rule = one(docs, "PrometheusRule", "kingmaker")
    assert [g["name"] for g in rule["spec"]["groups"]] == ["kingmaker-drift", "kingmaker-test"]  # file order
    alert = rule["spec"]["groups"][1]["rules"][0]
    assert alert["annotations"]["summary"] == "Router {{ $labels.instance }} is down"  # not templated by Helm
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert not list(crd_validators()[(rule["apiVersion"], "PrometheusRule")].iter_errors(rule))


def test_each_dashboard_becomes_a_configmap_the_grafana_sidecar_finds(chart_with_files: Path) -> None:
    cm = one(render(MONITORING, chart=chart_with_files), "ConfigMap", "kingmaker-dashboard-kingmaker-serving")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "kingmaker"}
    assert json.loads(cm["data"]["kingmaker_serving.json"])["title"] == "kingmaker serving"


def test_without_monitoring_files_nothing_is_rendered(tmp_path: Path) -> None:
    chart = tmp_path / "kingmaker"
    shutil.copytree(CHART, chart)
    shutil.rmtree(chart / "files" / "monitoring", ignore_errors=True)
    kinds = {d.kind for d in render(MONITORING, chart=chart)}
    assert "PrometheusRule" not in kinds and "PodMonitor" in kinds
    assert not [d for d in render(MONITORING, chart=chart) if d.name.startswith("kingmaker-dashboard-")]


def test_a_file_that_is_not_a_rule_file_fails_naming_it(chart_with_files: Path) -> None:
    (chart_with_files / "files" / "monitoring" / "rules" / "broken.yaml").write_text("rule_files: [x.yaml]\n")
    proc = helm("template", "kingmaker", chart_with_files, "-f", MONITORING, check=False)
    assert proc.returncode != 0
    assert "files/monitoring/rules/broken.yaml is not a Prometheus rule file" in proc.stderr
