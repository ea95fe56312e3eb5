"""The controller's adapters that read the world, one module per source.

Each implements a one-method read port of `k8s.observe` (or, for the registry, the `k8s.act.Registry`
port) and brings its own client; nothing here decides anything:

- `logs` — `LogWindows`: both arms' rows of the prediction log joined with the label log (pandas, pyarrow);
- `prometheus` — `PrometheusAPI` (the HTTP query API) and `PrometheusGuardrails`: the challenger's error rate
  and p99 latency;
- `drift` — `FileDrift` (the drift job's ``drift.json``, `kingmaker.drift_result`) and `PrometheusDrift` (the
  gauges the job pushes): the latest arm-vs-arm score PSI;
- `registry` — `MlflowRegistry`: the versions the aliases point at, and the alias moves and tags of a swap.
"""
