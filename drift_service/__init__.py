"""drift_service: PSI/KS statistics, window loading, the drift job and its report.

Layers (pure first; the pure modules import no mlflow/kubernetes/httpx/requests, see
tests/unit/drift_service/test_layers.py):

- `stats` — one pure function per statistic (`psi`, `psi_categorical`, `ks`), p-value correction and
  severity rules; results carry the direction of "drifted".
- `analysis` — one window against the references: feature drift, per-arm score drift, arm vs arm.
- `document` — a run's result as the `kingmaker.drift_result` document (``drift.json``) and as flat MLflow metrics.
- `window` — reads the window from the prediction log (time span or latest N requests).
- `tracking` — MLflow: the reference by alias -> version -> run artifact, and the drift run.
- `report` — the self-contained HTML report (matplotlib Agg, PNGs inlined).
- `pushgateway` — gauges under metric-catalog names, pushed to a Prometheus Pushgateway.
- `job` — the CronJob entry point: observe -> analyse -> act; `cli` is `kingmaker drift`,
  `bench` is `kingmaker bench drift`.
"""
