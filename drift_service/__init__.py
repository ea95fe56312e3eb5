"""drift_service: PSI/KS statistics, window loading, the drift job and its report."""
