"""What the SREs watch: Prometheus rules with runbooks and Grafana dashboards, generated from one source.

- `monitoring.ruleset` — recording rules (``level:metric:operations``) and alerts, as data, naming only
  metrics of the catalog (`kingmaker.catalog`);
- `monitoring.boards` — the Grafana dashboards, built with Grafana's Foundation SDK from the catalog and
  the recorded series of `monitoring.ruleset`;
- `monitoring.generate` — writes ``monitoring/rules/*.yaml`` (plain Prometheus rule files) and
  ``monitoring/dashboards/*.json``; ``--check`` fails when they are not what the source generates.

``monitoring/runbooks/<Alert>.md`` explains each alert; ``monitoring/tests/*.yaml`` are ``promtool test rules``
unit tests. Regenerate with ``python -m monitoring.generate`` after changing the source.
"""
