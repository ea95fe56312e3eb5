"""PNG plots logged with every training run: PR curve, ROC, calibration, feature importance."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless; set before pyplot is imported
import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve, roc_curve

Curves = Mapping[str, tuple[npt.NDArray[np.int8], npt.NDArray[np.float64]]]  # name -> (y, score)


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pr_curve(curves: Curves, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for name, (y, s) in curves.items():
        p, r, _ = precision_recall_curve(y, s)
        ax.step(r, p, where="post", label=name)
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (test)", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower left")
    return _save(fig, path)


def roc(curves: Curves, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for name, (y, s) in curves.items():
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set(xscale="log", xlim=(1e-4, 1), xlabel="false-positive rate (log)", ylabel="true-positive rate",
           title="ROC (test)")
    ax.legend(loc="lower right")
    return _save(fig, path)


def calibration(curves: Curves, path: Path, n_bins: int = 10) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for name, (y, s) in curves.items():
        frac, mean = calibration_curve(y, s, n_bins=n_bins, strategy="quantile")
        ax.plot(mean, frac, marker="o", ms=3, label=name)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set(xlabel="mean predicted probability", ylabel="observed fraud rate", title="Calibration (test, quantile bins)")
    ax.legend(loc="upper left")
    return _save(fig, path)


def feature_importance(importance: Mapping[str, float], path: Path, title: str, top: int = 20) -> Path:
    items = sorted(importance.items(), key=lambda kv: kv[1], reverse=True)[:top][::-1]
    fig, ax = plt.subplots(figsize=(5.5, 0.25 * len(items) + 1.2))
    ax.barh([k for k, _ in items], [v for _, v in items], color="#4c72b0")
    ax.set(title=title, xlabel="importance")
    return _save(fig, path)
