"""The model format (`kingmaker.models`): model URIs, save -> load round trip with its signature and format
version, and registration (aliases, tags, all or nothing) against a real MLflow store on SQLite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from kingmaker import models
from kingmaker.errors import PermanentError
from tests.conftest import mlflow_store

FEATURES = ["amount", "f01", "n"]


@pytest.mark.parametrize(("uri", "expected"), [
    ("models:/fraud-detector@champion", ("fraud-detector", "champion")),
    ("models:/fraud-detector/12", ("fraud-detector", "12")),
])
def test_model_uris(uri: str, expected: tuple[str, str]) -> None:
    assert models.parse_model_uri(uri) == expected


@pytest.mark.parametrize("uri", ["runs:/abc/model", "models:/fraud-detector/latest", "models:/fraud-detector",
                                 "models:/@champion"])
def test_bad_model_uris_are_refused(uri: str) -> None:
    with pytest.raises(PermanentError):
        models.parse_model_uri(uri)


def test_importing_the_format_loads_no_mlflow_xgboost_or_sklearn() -> None:
    """They are imported inside the functions that use them (CLI start-up, serving tests of pure code)."""
    code = ("import sys, kingmaker.models; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'mlflow', 'xgboost', 'sklearn'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def _frame(rows: int = 200) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.standard_normal((rows, len(FEATURES))), columns=FEATURES)
    return x, (x["f01"] + rng.normal(size=rows) > 1).astype(int).to_numpy()


def _save(path: Path, *, features: list[str] = FEATURES) -> Path:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from sklearn.linear_model import LogisticRegression

    x, y = _frame()
    signature = ModelSignature(inputs=Schema([ColSpec("long" if c == "n" else "double", c) for c in reversed(FEATURES)]))
    return models.save(LogisticRegression().fit(x, y), path, flavor="sklearn", signature=signature,
                       input_example=x.head(2), threshold=0.25, features=features, extra={"candidate": "logreg"})


REF = models.ModelRef("fraud-detector", "7", "run", "runs:/run/model")


def _metadata(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load((path / "MLmodel").read_text())["metadata"]["kingmaker"])


def _set_metadata(path: Path, **changes: Any) -> None:
    doc = yaml.safe_load((path / "MLmodel").read_text())
    doc["metadata"]["kingmaker"].update(changes)
    for key, value in changes.items():
        if value is None:
            del doc["metadata"]["kingmaker"][key]
    (path / "MLmodel").write_text(yaml.safe_dump(doc))


def test_save_and_load_round_trip_with_signature_in_feature_order(tmp_path: Path) -> None:
    path = _save(tmp_path / "model")
    meta = _metadata(path)
    assert meta == {"format": models.FORMAT_VERSION, "flavor": "sklearn", "threshold": 0.25, "features": FEATURES,
                    "candidate": "logreg"}
    model = models.load_local(path, REF)
    assert model.features == tuple(FEATURES) and model.threshold == 0.25 and model.booster is None
    assert model.signature == (("amount", "double"), ("f01", "double"), ("n", "long"))  # the model's order
    x, _ = _frame(5)
    scores = model.predict_proba(x)
    assert scores.shape == (5,) and np.all((scores >= 0) & (scores <= 1))
    np.testing.assert_array_equal(model.predict_proba(x.to_numpy()), scores)
    assert model.decide(np.array([0.2, 0.25])).tolist() == [False, True]


def test_models_without_a_format_key_are_format_1(tmp_path: Path) -> None:
    path = _save(tmp_path / "model")
    _set_metadata(path, format=None)
    assert "format" not in _metadata(path)
    assert models.load_local(path, REF).threshold == 0.25


def test_unknown_format_versions_and_foreign_models_are_refused(tmp_path: Path) -> None:
    path = _save(tmp_path / "model")
    _set_metadata(path, format=2)
    with pytest.raises(PermanentError, match="models:/fraud-detector/7 is in kingmaker model format 2; this release"):
        models.load_local(path, REF)
    doc = yaml.safe_load((path / "MLmodel").read_text())
    del doc["metadata"]
    (path / "MLmodel").write_text(yaml.safe_dump(doc))
    with pytest.raises(PermanentError, match="was not saved by kingmaker"):
        models.load_local(path, REF)


def test_features_must_match_the_signature(tmp_path: Path) -> None:
    path = _save(tmp_path / "model")
    _set_metadata(path, features=["amount", "f01"])
    with pytest.raises(PermanentError, match="differ from its signature"):
        models.load_local(path, REF)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One SQLite store for the module (creating one takes seconds); each test registers its own model name."""
    client, experiment, _ = mlflow_store(tmp_path_factory.mktemp("mlflow"), "models-test")
    return client, experiment


def test_register_first_champion_then_challenger_and_load_back(store: Any, tmp_path: Path) -> None:
    client, experiment = store
    run = client.create_run(experiment).info.run_id
    first = models.register(client, "first", run, _save(tmp_path / "model"), tags={"k": "v"})
    second = models.register(client, "first", run)  # the run already has its model
    assert (first, second) == (("1", "champion"), ("2", "challenger"))
    assert client.get_model_version("first", "1").tags == {"k": "v", "kingmaker.registered_as": "champion"}
    assert client.get_model_version("first", "2").tags == {"kingmaker.registered_as": "challenger"}
    assert models.register(client, "first", run, alias="challenger") == ("3", "challenger")
    loaded = models.load_uri(client, "models:/first@challenger", tmp_path / "download")
    assert (loaded.ref.version, loaded.ref.alias, loaded.threshold) == ("3", "challenger", 0.25)
    with pytest.raises(PermanentError, match="does not exist in the registry"):
        models.resolve(client, "first", "nope")


def test_register_is_all_or_nothing(store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client, experiment = store
    run = client.create_run(experiment).info.run_id

    def broken(*args: Any) -> None:
        raise RuntimeError("alias store down")

    monkeypatch.setattr(client, "set_registered_model_alias", broken)
    with pytest.raises(RuntimeError, match="alias store down"):
        models.register(client, "broken", run, _save(tmp_path / "model"))
    assert client.search_model_versions("name='broken'") == []
