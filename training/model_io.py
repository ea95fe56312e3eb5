"""Saving and loading registered fraud models — the one place that knows MLflow flavors.

Training saves every candidate with its native flavor (``mlflow.xgboost`` for XGBoost, UBJSON;
``mlflow.sklearn`` for scikit-learn with ``predict_proba`` as the pyfunc method), a signature and an
input example, plus kingmaker metadata in the MLmodel file: the decision threshold and the ordered
feature list. Serving and evaluation load a version back as a `FraudModel`, whose
``predict_proba`` is the fast native path (``Booster.inplace_predict`` for XGBoost).

Model references are aliases (``champion``/``challenger``) or version numbers, never stages and never
``latest``; `resolve` turns one into a concrete version once, at start-up.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature

from kingmaker.errors import PermanentError, TemporaryError

METADATA_KEY = "kingmaker"
MODEL_ARTIFACT = "model"


@dataclass(frozen=True)
class ModelRef:
    """A registered model version, resolved."""

    name: str
    version: str
    run_id: str
    source: str
    alias: str | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def parse_model_uri(uri: str) -> tuple[str, str]:
    """``models:/name@alias`` or ``models:/name/3`` -> (name, alias-or-version)."""
    if not uri.startswith("models:/"):
        raise PermanentError(f"model reference {uri!r} must look like models:/<name>@<alias> or models:/<name>/<version>")
    body = uri.removeprefix("models:/")
    if "@" in body:
        name, ref = body.split("@", 1)
    elif "/" in body:
        name, ref = body.split("/", 1)
        if not ref.isdigit():
            raise PermanentError(f"model reference {uri!r}: use an alias (@champion) or a version number, not {ref!r}")
    else:
        raise PermanentError(f"model reference {uri!r} names no alias or version")
    if not name or not ref:
        raise PermanentError(f"model reference {uri!r} is incomplete")
    return name, ref


def resolve(client: MlflowClient, name: str, ref: str) -> ModelRef:
    """Resolve an alias or version number to a concrete version. Missing -> PermanentError."""
    try:
        if ref.isdigit():
            mv = client.get_model_version(name, ref)
            alias = None
        else:
            mv = client.get_model_version_by_alias(name, ref)
            alias = ref
    except MlflowException as exc:
        code = getattr(exc, "error_code", "")
        if code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            raise PermanentError(f"model {name}@{ref} does not exist in the registry") from exc
        raise TemporaryError(f"cannot reach the MLflow registry to resolve {name}@{ref}: {exc.message}") from exc
    return ModelRef(name=name, version=str(mv.version), run_id=str(mv.run_id), source=str(mv.source), alias=alias)


def pinned_requirements() -> list[str]:
    """The serving environment, pinned to what trained the model (MLflow's own inference spawns a
    subprocess and takes seconds)."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "xgboost", "scikit-learn", "pandas", "numpy", "cloudpickle")]


def save(model: Any, path: Path, *, flavor: str, signature: ModelSignature, input_example: pd.DataFrame,
         threshold: float, features: list[str], extra: dict[str, Any] | None = None) -> Path:
    """Save a fitted model in its native MLflow flavor with kingmaker metadata."""
    metadata = {METADATA_KEY: {"flavor": flavor, "threshold": float(threshold), "features": list(features),
                               **(extra or {})}}
    common: dict[str, Any] = {"signature": signature, "input_example": input_example, "metadata": metadata,
                              "pip_requirements": pinned_requirements()}
    if flavor == "xgboost":
        import mlflow.xgboost

        mlflow.xgboost.save_model(model, str(path), model_format="ubj", **common)
    elif flavor == "sklearn":
        import mlflow.sklearn

        mlflow.sklearn.save_model(model, str(path), pyfunc_predict_fn="predict_proba",
                                  serialization_format="cloudpickle", **common)
    else:
        raise ValueError(f"unknown flavor {flavor!r}")
    return path


class FraudModel:
    """A loaded model version: scores, decisions at its threshold, and per-feature contributions."""

    def __init__(self, ref: ModelRef, native: Any, flavor: str, threshold: float, features: list[str]):
        self.ref = ref
        self.flavor = flavor
        self.threshold = threshold
        self.features = tuple(features)
        self._native = native
        self._booster = native.get_booster() if flavor == "xgboost" else None

    def predict_proba(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Fraud probability per row; ``x`` has the columns of `features`, in order."""
        arr = np.asarray(x, dtype=np.float32) if not isinstance(x, pd.DataFrame) else x[list(self.features)].to_numpy(np.float32)
        if self._booster is not None:
            return np.asarray(self._booster.inplace_predict(arr), dtype=np.float64)
        frame = pd.DataFrame(arr, columns=list(self.features))
        return np.asarray(self._native.predict_proba(frame)[:, 1], dtype=np.float64)

    def decide(self, scores: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        return scores >= self.threshold

    def contributions(self, x: npt.ArrayLike) -> npt.NDArray[np.float64] | None:
        """Per-feature contributions to the log-odds (n_rows x n_features), or None if unsupported.

        XGBoost: native SHAP values (``pred_contribs``). Linear pipelines: coefficient x scaled value.
        """
        arr = np.asarray(x, dtype=np.float32) if not isinstance(x, pd.DataFrame) else x[list(self.features)].to_numpy(np.float32)
        if self._booster is not None:
            import xgboost as xgb

            contribs = self._booster.predict(xgb.DMatrix(arr, feature_names=list(self.features)), pred_contribs=True)
            return np.asarray(contribs[:, :-1], dtype=np.float64)  # last column is the bias
        steps = getattr(self._native, "named_steps", {})
        clf = steps.get("clf") if steps else None
        if clf is not None and hasattr(clf, "coef_"):
            scaled = self._native[:-1].transform(pd.DataFrame(arr, columns=list(self.features)))
            return np.asarray(scaled * clf.coef_[0], dtype=np.float64)
        return None


def load_local(path: Path, ref: ModelRef) -> FraudModel:
    meta = Model.load(str(path / "MLmodel")).metadata or {}
    km = meta.get(METADATA_KEY)
    if not km:
        raise PermanentError(f"{ref.uri} was not saved by kingmaker (no '{METADATA_KEY}' metadata in MLmodel)")
    if km["flavor"] == "xgboost":
        import mlflow.xgboost

        native = mlflow.xgboost.load_model(str(path))
    else:
        import mlflow.sklearn

        native = mlflow.sklearn.load_model(str(path))
        if "n_jobs" in native.get_params():
            # a forest summing per-tree votes across threads is not bit-for-bit repeatable;
            # one thread makes every served score reproducible for audit
            native.set_params(n_jobs=1)
    return FraudModel(ref, native, km["flavor"], float(km["threshold"]), list(km["features"]))


def load(client: MlflowClient, ref: ModelRef, dst: Path | None = None) -> FraudModel:
    """Download a resolved version's model artifact and load it natively."""
    if not ref.source.startswith("runs:/"):
        raise PermanentError(f"{ref.uri} has source {ref.source!r}; kingmaker registers runs:/ sources only")
    artifact_path = ref.source.removeprefix(f"runs:/{ref.run_id}/")
    dst = dst or Path(tempfile.mkdtemp(prefix="kingmaker-model-"))
    try:
        local = client.download_artifacts(ref.run_id, artifact_path, str(dst))
    except MlflowException as exc:
        raise TemporaryError(f"cannot download {ref.uri} from MLflow: {exc.message}") from exc
    except OSError as exc:
        raise PermanentError(f"artifacts of {ref.uri} are missing: {exc}") from exc
    return load_local(Path(local), ref)


def load_uri(client: MlflowClient, uri: str) -> FraudModel:
    """``models:/fraud-detector@champion`` -> loaded model (resolved once)."""
    name, ref = parse_model_uri(uri)
    return load(client, resolve(client, name, ref))
