"""The label-delay rule, in one place: which labelled transactions count (the controller's evidence,
`k8s.decide.mature`, and the training set of `kingmaker retrain`).

A transaction predicted at ``ts`` counts once it is ``label_delay_seconds`` old, with the label known by then
(``label_ts <= ts + delay``); a label arriving later is ignored. So the rows that count only ever grow, and a
model is never trained or judged on labels the controller would not have used. NumPy only: pure.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def due(ts: NDArray[np.float64], *, now: float, label_delay_seconds: float) -> NDArray[np.bool_]:
    """Transactions (Unix seconds ``ts``) old enough for their label to count."""
    return np.asarray(ts + label_delay_seconds <= now)


def matured(ts: NDArray[np.float64], label: NDArray[np.float64], label_ts: NDArray[np.float64], *, now: float,
            label_delay_seconds: float) -> NDArray[np.bool_]:
    """Rows that count at ``now``: due, and labelled (``label`` not NaN) by ``ts + label_delay_seconds``."""
    return due(ts, now=now, label_delay_seconds=label_delay_seconds) & ~np.isnan(label) & (
        label_ts <= ts + label_delay_seconds)
