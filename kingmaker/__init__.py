"""kingmaker: champion/challenger serving for fraud-detection models.

This small package holds what every part imports so that no contract is written twice:
settings, errors, the prediction/label log schema, the drift reference format, the metric
catalog and the `kingmaker` command line.
"""

__version__ = "0.1.0"
