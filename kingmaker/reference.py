"""The drift reference: what "normal" looked like when a model version was trained.

Training logs it as the MLflow artifact folder ``drift_reference/`` of the run that produced the
registered version; the drift job reads it back by alias -> version -> run.

- ``sample.parquet``: a random sample of training inputs (feature columns) plus ``score``, the
  model's score for each sampled row.
- ``bins.json``: per-feature and score bin edges from **reference quantiles only**, so every later
  window is binned the same way. Only the inner cut points are stored (``n_bins - 1`` of them at
  most; repeated quantiles of discrete features are merged); the outer bins are open-ended, so values
  outside the reference range fall in the first or last bin.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

ARTIFACT_DIR = "drift_reference"
SAMPLE_FILE = "sample.parquet"
BINS_FILE = "bins.json"
SCORE_COLUMN = "score"
FORMAT_VERSION = 1


def quantile_edges(values: npt.ArrayLike, n_bins: int = 10) -> list[float]:
    """Inner cut points at the reference quantiles 1/n .. (n-1)/n, duplicates merged.

    A value ``v`` falls in bin ``searchsorted(edges, v, side="right")``: bins are left-closed.
    """
    if n_bins < 2:
        raise ValueError("n_bins must be at least 2")
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return []
    qs = np.quantile(x, np.arange(1, n_bins) / n_bins)
    return [float(v) for v in np.unique(qs)]


@dataclass(frozen=True)
class Reference:
    sample: pd.DataFrame  # feature columns + "score"
    features: tuple[str, ...]
    edges: dict[str, list[float]]  # per feature, and "score"
    n_bins: int


def build(sample: pd.DataFrame, scores: npt.ArrayLike, features: list[str], n_bins: int = 10) -> Reference:
    frame = sample[features].reset_index(drop=True).copy()
    frame[SCORE_COLUMN] = np.asarray(scores, dtype=float)
    edges = {col: quantile_edges(frame[col].to_numpy(), n_bins) for col in [*features, SCORE_COLUMN]}
    return Reference(sample=frame, features=tuple(features), edges=edges, n_bins=n_bins)


def save(ref: Reference, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    ref.sample.to_parquet(folder / SAMPLE_FILE, index=False)
    doc = {"format": FORMAT_VERSION, "n_bins": ref.n_bins, "features": list(ref.features), "edges": ref.edges}
    (folder / BINS_FILE).write_text(json.dumps(doc, indent=1))
    return folder


def load(folder: Path) -> Reference:
    doc = json.loads((folder / BINS_FILE).read_text())
    if doc.get("format") != FORMAT_VERSION:
        raise ValueError(f"unsupported drift reference format {doc.get('format')!r} in {folder}")
    sample = pd.read_parquet(folder / SAMPLE_FILE)
    return Reference(sample=sample, features=tuple(doc["features"]), edges=doc["edges"], n_bins=int(doc["n_bins"]))
