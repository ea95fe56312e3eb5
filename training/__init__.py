"""training: data, candidates, metrics, MLflow logging and registry."""
