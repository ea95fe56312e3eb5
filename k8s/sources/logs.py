"""Both arms' logged predictions joined with their labels: the `k8s.observe.LabelledWindows` source.

`LogWindows` reads the prediction and label logs of `kingmaker.logs` (Parquet, a folder or any fsspec URL)
into the `ArmRows` that `k8s.decide.decide` takes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa

from k8s.decide import ArmRows
from k8s.state import Pair
from kingmaker import logs
from kingmaker.errors import PermanentError, TemporaryError
from kingmaker.roles import Arm, Mode

log = logging.getLogger(__name__)

_COLUMNS = ("request_id", "ts", "arm", "served", "mode", "model_version", "score")


def _unix(column: pd.Series) -> np.ndarray:
    """Timestamps (tz-aware or naive UTC) -> float unix seconds."""
    stamps = pd.to_datetime(column, utc=True).dt.as_unit("us")
    return stamps.astype("int64").to_numpy(dtype=np.float64) / 1e6


def _empty(version: str, with_amount: bool) -> ArmRows:
    nothing: list[float] = []
    return ArmRows.of(version, ts=nothing, score=nothing, label=nothing, label_ts=nothing,
                      amount=nothing if with_amount else None, request_id=[], served=[])


def _arm_rows(version: str, frame: pd.DataFrame, amount: str | None) -> ArmRows:
    return ArmRows.of(
        version, ts=frame["t"].to_numpy(np.float64), score=frame["score"].to_numpy(np.float64),
        label=frame["label"].to_numpy(np.float64), label_ts=frame["label_t"].to_numpy(np.float64),
        amount=None if amount is None else frame[amount].to_numpy(np.float64),
        request_id=frame["request_id"].astype(str).to_numpy(), served=frame["served"].to_numpy(bool),
    )


@dataclass(frozen=True)
class LogWindows:
    """Both arms' rows of one experiment from the prediction log, joined with the label log.

    Rows count when they were logged in the current ``mode`` by the pair's versions on their arms
    (``model_version`` is the resolved version the Scorer answered with), from the challenger's first row
    on: the experiment starts when the challenger starts answering. Shadow mode pairs the arms on request
    id (each request once, in prediction-time order; both arms carry the champion row's time). A request
    logged twice on one arm counts once. ``since`` bounds the read for very long logs (it also bounds the
    test's sequence, so leave it None unless the log outgrows memory).

    Split mode keeps each arm's rows with their ``served`` flag: with pairing on, the Router logs a paired
    request on both arms (served True on the arm that answered, False on the other), and `k8s.decide`
    compares the arms on those pairs (`k8s.decide.split_pairs`).
    """

    predictions_url: str
    labels_url: str
    since: datetime | None = None

    def _predictions(self, amount_column: str | None) -> tuple[pd.DataFrame, str | None]:
        columns = list(_COLUMNS)
        if amount_column is not None:
            try:
                return logs.read_predictions(self.predictions_url, since=self.since,
                                             columns=[*columns, amount_column]), amount_column
            except (pa.ArrowInvalid, KeyError):
                log.warning("prediction log has no column %s: missed frauds cost the constant", amount_column)
        return logs.read_predictions(self.predictions_url, since=self.since, columns=columns), None

    def rows(self, pair: Pair, mode: Mode, amount_feature: str | None) -> tuple[ArmRows, ArmRows]:
        if pair.challenger is None:
            raise PermanentError("no challenger version to read rows for")
        wanted = None if amount_feature is None else logs.feature_column(amount_feature)
        try:
            preds, amount = self._predictions(wanted)
            labels = logs.read_labels(self.labels_url)
        except (OSError, pa.ArrowException) as exc:
            raise TemporaryError(f"cannot read the prediction/label logs: {exc}") from exc
        if preds.empty:
            return _empty(pair.champion, wanted is not None), _empty(pair.challenger, wanted is not None)
        preds = preds[preds["mode"] == mode.value]
        version = preds["model_version"].astype(str)
        champion = preds[(preds["arm"] == Arm.CHAMPION.value) & (version == pair.champion)]
        challenger = preds[(preds["arm"] == Arm.CHALLENGER.value) & (version == pair.challenger)]
        if challenger.empty:
            return _empty(pair.champion, wanted is not None), _empty(pair.challenger, wanted is not None)
        champion, challenger = (self._joined(f, labels) for f in (champion, challenger))
        if mode is Mode.SHADOW:
            return self._paired(pair, champion, challenger, amount)
        start = challenger["t"].min()  # (a request the challenger scored counts, though answered a moment before)
        champion = champion[(champion["t"] >= start) | champion["request_id"].isin(challenger["request_id"])]
        return _arm_rows(pair.champion, champion, amount), _arm_rows(pair.challenger, challenger, amount)

    @staticmethod
    def _joined(frame: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
        frame = frame.assign(t=_unix(frame["ts"]), request_id=frame["request_id"].astype(str))
        frame = frame.sort_values(["t", "request_id"], kind="stable").drop_duplicates("request_id", keep="first")
        if labels.empty:
            return frame.assign(label=np.nan, label_t=np.nan)
        lab = pd.DataFrame({"request_id": labels["request_id"].astype(str),
                            "label": labels["label"].astype(np.float64), "label_t": _unix(labels["label_ts"])})
        return frame.merge(lab, on="request_id", how="left", validate="one_to_one")

    @staticmethod
    def _paired(pair: Pair, champion: pd.DataFrame, challenger: pd.DataFrame,
                amount: str | None) -> tuple[ArmRows, ArmRows]:
        assert pair.challenger is not None
        both = champion.merge(challenger[["request_id", "score"]], on="request_id", suffixes=("", "_b"),
                              validate="one_to_one")
        both = both.sort_values(["t", "request_id"], kind="stable")
        challenger_side = both.assign(score=both["score_b"], served=False)
        return _arm_rows(pair.champion, both, amount), _arm_rows(pair.challenger, challenger_side, amount)
