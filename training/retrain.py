"""`kingmaker retrain`, the pure part: a training set from served traffic, the gate window, and the gate.

- `served_set`: the prediction log joined to the label log. One row per transaction: shadow and paired rows
  (several arms logged under one request id, ``served`` telling which answered) are the same request with the
  same features, so the served row stands for them all and a transaction counts once. Labels count by the
  controller's rule (`kingmaker.maturity`: known within the label delay, the transaction at least that old).
  The features are the logged ones — what the model saw when it served — so training/serving skew is
  impossible by construction. Time-ordered.
- `split_window`: the most recent share of those rows is the gate window; training never sees it.
- `gate`: the candidate and the current champion score the gate window, each at its own deployed threshold;
  per transaction, the cost of its decision under `kingmaker.objective.Objective` (the objective the controller's
  policy takes its defaults from: an alert costs a review, a missed fraud its cost); the difference candidate - champion per 1,000 transactions with a paired bootstrap 95%
  interval. The candidate passes when the interval's upper end is at most ``margin`` (it is not worse than the
  champion by more than the margin, with its CI).

No MLflow and no file here (`training.retrain_cli` does the I/O); tests build the inputs literally.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from kingmaker import logs, maturity
from kingmaker.errors import PermanentError
from kingmaker.objective import Objective
from training.operating import bootstrap_mean_ci

LABEL = "label"
ID = "request_id"
TIME = "ts"


@dataclass(frozen=True)
class Served:
    """The matured, deduplicated transactions; what was left out and why."""

    frame: pd.DataFrame  # request_id, ts, label, one column per feature (plain names), time-ordered
    logged_rows: int  # prediction-log rows read (every arm)
    transactions: int  # distinct request ids among them
    unmatured: int  # transactions too young, or labelled too late or never

    @property
    def frauds(self) -> int:
        return int(self.frame[LABEL].sum())


def _seconds(column: pd.Series) -> npt.NDArray[np.float64]:
    """Unix seconds (whatever the column's datetime unit); NaT -> +inf (never known)."""
    since = pd.to_datetime(column, utc=True) - pd.Timestamp(0, tz="UTC")
    return np.asarray(since.dt.total_seconds().fillna(np.inf), dtype=np.float64)


def served_set(predictions: pd.DataFrame, labels: pd.DataFrame, features: list[str], *, now: float,
               label_delay_seconds: float) -> Served:
    """One labelled row per transaction with the logged ``features`` (see the module docstring)."""
    if predictions.empty:
        return Served(pd.DataFrame(columns=[ID, TIME, LABEL, *features]), 0, 0, 0)
    columns = [logs.feature_column(f) for f in features]
    missing = [f for f, c in zip(features, columns, strict=True) if c not in predictions.columns]
    if missing:
        raise PermanentError(f"the prediction log has no column for feature(s) {', '.join(missing)} of the champion")
    served = predictions["served"].fillna(True).astype(bool) if "served" in predictions else True
    rows = (predictions.assign(_served=served).sort_values(["_served", TIME], ascending=[False, True], kind="stable")
            .drop_duplicates(ID, keep="first"))
    if labels.empty:
        labels = pd.DataFrame({ID: pd.Series(dtype=str), LABEL: pd.Series(dtype=float),
                               "label_ts": pd.Series(dtype="datetime64[ns, UTC]")})
    joined = rows[[ID, TIME, *columns]].merge(labels[[ID, LABEL, "label_ts"]], on=ID, how="left")
    label = joined[LABEL].to_numpy(dtype=np.float64, na_value=np.nan)
    keep = maturity.matured(_seconds(joined[TIME]), label, _seconds(joined["label_ts"]), now=now,
                            label_delay_seconds=label_delay_seconds)
    frame = (joined[keep].rename(columns=dict(zip(columns, features, strict=True)))
             .assign(**{LABEL: lambda f: f[LABEL].astype(np.int8)})
             .sort_values(TIME, kind="stable").reset_index(drop=True))
    return Served(frame[[ID, TIME, LABEL, *features]], len(predictions), len(rows), int((~keep).sum()))


def split_window(frame: pd.DataFrame, holdout: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training part, gate window): the gate window is the most recent ``holdout`` share of the rows."""
    if not 0.0 < holdout < 1.0:
        raise PermanentError(f"--holdout must be between 0 and 1, got {holdout}")
    cut = len(frame) - max(1, round(len(frame) * holdout))
    return frame.iloc[:cut].reset_index(drop=True), frame.iloc[cut:].reset_index(drop=True)


@dataclass(frozen=True)
class Gate:
    """Expected cost per 1,000 transactions of each model on the gate window, and the verdict."""

    champion_cost: float
    candidate_cost: float
    difference: float  # candidate - champion (negative: the candidate is cheaper)
    ci_low: float
    ci_high: float
    margin: float
    rows: int
    frauds: int

    @property
    def passed(self) -> bool:
        return self.ci_high <= self.margin

    @property
    def reason(self) -> str:
        verdict = "passes" if self.passed else "fails"
        return (f"the candidate {verdict} the gate: expected cost per 1,000 transactions {self.candidate_cost:.2f} "
                f"vs the champion's {self.champion_cost:.2f} (difference {self.difference:+.2f}, 95% CI "
                f"[{self.ci_low:+.2f}, {self.ci_high:+.2f}], allowed up to {self.margin:+.2f}) on the {self.rows} "
                f"most recent matured transactions ({self.frauds} frauds) that training never saw")


def decision_costs(y: npt.NDArray[np.int8], score: npt.NDArray[np.float64], threshold: float, costs: Objective,
                   amounts: npt.NDArray[np.float64] | None = None) -> npt.NDArray[np.float64]:
    """Per transaction, what the model's decision costs: a review when it alerts, the miss cost for a missed fraud."""
    return costs.row_costs(y, score >= threshold, amounts)


def gate(y: npt.NDArray[np.int8], champion: npt.NDArray[np.float64], candidate: npt.NDArray[np.float64], *,
         margin: float, n_boot: int = 1000, seed: int = 0) -> Gate:
    """Compare the per-row decision costs (`decision_costs`) of both models on the same transactions ``y``, paired."""
    if len(y) == 0 or not (len(y) == len(champion) == len(candidate)):
        raise PermanentError("the gate window is empty or the scores do not match its rows")
    diff = candidate - champion
    low, high = bootstrap_mean_ci(diff, n_boot, seed)
    return Gate(champion_cost=1000.0 * float(champion.mean()), candidate_cost=1000.0 * float(candidate.mean()),
                difference=1000.0 * float(diff.mean()), ci_low=1000.0 * low, ci_high=1000.0 * high,
                margin=margin, rows=len(y), frauds=int(np.asarray(y).sum()))
