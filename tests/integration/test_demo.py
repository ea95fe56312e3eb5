"""`kingmaker demo` (the README's main command) end to end on a small synthetic sample."""

from pathlib import Path

import pytest

from kingmaker.settings import MlflowSettings
from tests.conftest import kingmaker

pytestmark = pytest.mark.integration


def test_demo_registers_an_incumbent_champion_and_a_challenger(tmp_path: Path) -> None:
    out = kingmaker("demo", "--data", "synthetic", "--rows", "3000", "--folds", "3", home=tmp_path).stdout
    assert "step 1/2: train the incumbent" in out and "step 2/2: train the candidates" in out
    client = MlflowSettings.from_env(home=tmp_path, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").client()
    aliases = client.get_registered_model("fraud-detector").aliases
    assert {k: str(v) for k, v in aliases.items()} == {"champion": "1", "challenger": "2"}
    assert client.get_model_version("fraud-detector", "1").tags["kingmaker.candidate"] == "logreg"
    assert "kingmaker promote --dry-run" in out

    again = kingmaker("demo", "--data", "synthetic", "--rows", "3000", "--folds", "3", home=tmp_path).stdout
    assert "step 1/1: train the candidates" in again  # a champion exists: only a new challenger
    aliases = client.get_registered_model("fraud-detector").aliases
    assert {k: str(v) for k, v in aliases.items()} == {"champion": "1", "challenger": "3"}
