"""The MLflow registry adapter against a real MLflow store (SQLite): aliases, tags and its errors."""

from __future__ import annotations

import pytest

from k8s.sources.registry import MlflowRegistry
from kingmaker.errors import PermanentError


def test_aliases_move_and_tags_stick(registry: MlflowRegistry) -> None:
    assert registry.aliases() == {"champion": "1", "challenger": "2"}
    registry.set_alias("previous-champion", "1")
    registry.delete_alias("challenger")
    assert registry.aliases() == {"champion": "1", "previous-champion": "1"}
    registry.tag("2", {"kingmaker.test": "yes"})
    assert registry.version_tags("2")["kingmaker.test"] == "yes"


def test_mlflow_errors_are_classified(registry: MlflowRegistry) -> None:
    with pytest.raises(PermanentError):
        MlflowRegistry(registry.client, "no-such-model").aliases()
    with pytest.raises(PermanentError):
        registry.set_alias("champion", "99")
