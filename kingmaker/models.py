"""Registered fraud models: how kingmaker stores a model in MLflow, reads it back and registers it.

**Format** (version `FORMAT_VERSION`). A model folder in its native MLflow flavor (``mlflow.xgboost``,
UBJSON; ``mlflow.sklearn``, cloudpickle, ``predict_proba`` as the pyfunc method) with a signature
(every feature a named input column: serving validates requests against it), an input example, and
kingmaker's metadata in the ``MLmodel`` file::

    metadata:
      kingmaker: {format: 1, flavor: xgboost, threshold: 0.42, features: [V1, ..., Amount], candidate: xgboost}

`save` writes it; `load_local` reads a folder back as a `FraudModel` (whose ``predict_proba`` is the fast
native path, ``Booster.inplace_predict`` for XGBoost), `load` / `load_uri` a registered version.
Models saved before the ``format`` key existed are format 1.

**Registry.** A model reference is an alias (``models:/fraud-detector@champion``) or a version number
(``models:/fraud-detector/3``), never a stage and never ``latest``; `resolve` turns one into a concrete
version once, at start-up. `register` makes a new version from a run's logged model and points an alias
at it, all or nothing.

MLflow, XGBoost and scikit-learn are imported inside the functions that use them, so importing this
module costs NumPy and pandas only.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from kingmaker.errors import PermanentError, TemporaryError
from kingmaker.mlflow_errors import is_permanent
from kingmaker.roles import Arm

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.models import ModelSignature

METADATA_KEY = "kingmaker"
MODEL_ARTIFACT = "model"
FORMAT_VERSION = 1
DESCRIPTION = "Fraud-detection model served champion/challenger by kingmaker"


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
    from mlflow.exceptions import MlflowException

    try:
        if ref.isdigit():
            mv = client.get_model_version(name, ref)
            alias = None
        else:
            mv = client.get_model_version_by_alias(name, ref)
            alias = ref
    except MlflowException as exc:
        if is_permanent(exc):
            raise PermanentError(f"model {name}@{ref} does not exist in the registry") from exc
        raise TemporaryError(f"cannot reach the MLflow registry to resolve {name}@{ref}: {exc.message}") from exc
    return ModelRef(name=name, version=str(mv.version), run_id=str(mv.run_id), source=str(mv.source), alias=alias)


def signature(x: pd.DataFrame) -> ModelSignature:
    """Every column of ``x`` is a required double input; the output is the fraud probability."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec("double", c) for c in x.columns]),
                          outputs=Schema([ColSpec("double", "fraud_probability")]))


def pinned_requirements() -> list[str]:
    """The serving environment, pinned to what trained the model (MLflow's own inference spawns a
    subprocess and takes seconds)."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "xgboost", "scikit-learn", "pandas", "numpy", "cloudpickle")]


def save(model: Any, path: Path, *, flavor: str, signature: ModelSignature, input_example: pd.DataFrame,
         threshold: float, features: list[str], extra: dict[str, Any] | None = None) -> Path:
    """Save a fitted model in its native MLflow flavor with kingmaker metadata."""
    metadata = {METADATA_KEY: {"format": FORMAT_VERSION, "flavor": flavor, "threshold": float(threshold),
                               "features": list(features), **(extra or {})}}
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
    """A loaded model version: scores, decisions at its threshold, and per-feature contributions.

    ``signature``: (feature, MLflow type) of every input, in the order of ``features``."""

    def __init__(self, ref: ModelRef, native: Any, flavor: str, threshold: float, features: list[str],
                 signature: tuple[tuple[str, str], ...]):
        self.ref = ref
        self.flavor = flavor
        self.threshold = threshold
        self.features = tuple(features)
        self.signature = signature
        self._native = native
        self.booster = native.get_booster() if flavor == "xgboost" else None  # XGBoost's, for inplace_predict

    def _matrix(self, x: npt.ArrayLike) -> npt.NDArray[np.float32]:
        if isinstance(x, pd.DataFrame):
            return x[list(self.features)].to_numpy(np.float32)
        return np.asarray(x, dtype=np.float32)

    def predict_proba(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Fraud probability per row; ``x`` has the columns of `features`, in order."""
        arr = self._matrix(x)
        if self.booster is not None:
            return np.asarray(self.booster.inplace_predict(arr), dtype=np.float64)
        frame = pd.DataFrame(arr, columns=list(self.features))
        return np.asarray(self._native.predict_proba(frame)[:, 1], dtype=np.float64)

    def decide(self, scores: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        return scores >= self.threshold

    def contributions(self, x: npt.ArrayLike) -> npt.NDArray[np.float64] | None:
        """Per-feature contributions to the log-odds (n_rows x n_features), or None if unsupported.

        XGBoost: native SHAP values (``pred_contribs``). Linear pipelines: coefficient x scaled value.
        """
        arr = self._matrix(x)
        if self.booster is not None:
            import xgboost as xgb

            contribs = self.booster.predict(xgb.DMatrix(arr, feature_names=list(self.features)), pred_contribs=True)
            return np.asarray(contribs[:, :-1], dtype=np.float64)  # last column is the bias
        steps = getattr(self._native, "named_steps", {})
        clf = steps.get("clf") if steps else None
        if clf is not None and hasattr(clf, "coef_"):
            scaled = self._native[:-1].transform(pd.DataFrame(arr, columns=list(self.features)))
            return np.asarray(scaled * clf.coef_[0], dtype=np.float64)
        return None


def _signature(mlmodel: Any, features: list[str], where: str) -> tuple[tuple[str, str], ...]:
    """The input signature as (name, type) in the order of ``features``; it must name exactly those."""
    schema = mlmodel.get_input_schema()
    if schema is None or not schema.has_input_names():
        raise PermanentError(f"{where} has no named input signature")
    types = {str(spec.name): str(getattr(spec.type, "name", spec.type)) for spec in schema.inputs}
    if set(types) != set(features):
        raise PermanentError(f"{where}: model features {sorted(features)} differ from its signature {sorted(types)}")
    return tuple((f, types[f]) for f in features)


def load_local(path: Path, ref: ModelRef) -> FraudModel:
    """Read a folder written by `save` (``ref`` says which registered version it is)."""
    from mlflow.models import Model

    mlmodel = Model.load(str(path / "MLmodel"))
    km = (mlmodel.metadata or {}).get(METADATA_KEY)
    if not km:
        raise PermanentError(f"{ref.uri} was not saved by kingmaker (no '{METADATA_KEY}' metadata in MLmodel)")
    fmt = km.get("format", 1)
    if fmt != FORMAT_VERSION:
        raise PermanentError(f"{ref.uri} is in kingmaker model format {fmt!r}; this release reads format {FORMAT_VERSION}")
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
    features = list(km["features"])
    return FraudModel(ref, native, km["flavor"], float(km["threshold"]), features,
                      _signature(mlmodel, features, ref.uri))


def load(client: MlflowClient, ref: ModelRef, dst: Path | None = None) -> FraudModel:
    """Download a resolved version's model artifact (into ``dst``, else a new temporary folder) and load it."""
    from mlflow.exceptions import MlflowException

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


def load_uri(client: MlflowClient, uri: str, dst: Path | None = None) -> FraudModel:
    """``models:/fraud-detector@champion`` -> loaded model (resolved once)."""
    name, ref = parse_model_uri(uri)
    return load(client, resolve(client, name, ref), dst)


def register(client: MlflowClient, name: str, run_id: str, model_dir: Path | None = None, *,
             alias: str | None = None, tags: Mapping[str, str] | None = None) -> tuple[str, str]:
    """A new version of ``name`` from the model on run ``run_id``, tagged, with ``alias`` on it — or nothing.

    ``model_dir`` (a folder written by `save`) is first logged as the run's ``model`` artifact; without it
    the run must have one already. The registered model is created if it does not exist. ``alias`` None
    means ``champion`` for the first model, else ``challenger``. The version is tagged with ``tags`` and
    ``kingmaker.registered_as``; if pointing the alias fails, the version is deleted again.
    Returns (version, alias).
    """
    from mlflow.exceptions import MlflowException

    if model_dir is not None:
        client.log_artifacts(run_id, str(model_dir), MODEL_ARTIFACT)
    try:
        registered = client.get_registered_model(name)
    except MlflowException as exc:
        if not is_permanent(exc):
            raise
        registered = client.create_registered_model(name, description=DESCRIPTION)
    if alias is None:
        alias = (Arm.CHALLENGER if Arm.CHAMPION.value in (registered.aliases or {}) else Arm.CHAMPION).value
    mv = client.create_model_version(name, source=f"runs:/{run_id}/{MODEL_ARTIFACT}", run_id=run_id,
                                     tags={**(tags or {}), "kingmaker.registered_as": alias})
    try:
        client.set_registered_model_alias(name, alias, mv.version)
    except BaseException:
        client.delete_model_version(name, mv.version)
        raise
    return str(mv.version), alias
