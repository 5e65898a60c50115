"""The results table: one row per unlearned model; validation, orientation, method means, ranks."""
from __future__ import annotations

import math
import numbers

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from mmunlearn.errors import UserError
from mmunlearn.metrics.columns import headline_metrics, lower_is_better

METRICS = headline_metrics()         # FA, RA, MIA, AD, JS: the registry's headline metrics
LOWER_IS_BETTER = lower_is_better()
MODEL_KEYS = ("dataset", "method", "seed")
REQUIRED = (*MODEL_KEYS, *METRICS, "retrained_distance")
TIES = ("tau_b", "ordinal")          # tau matrix / stability: tie-aware Kendall tau-b, or the paper's
RELIABILITY = ("within", "pooled")   # what feeds the UQS weights: per-dataset rhos combined, or pooled


def _where(rows: pd.DataFrame, i: int) -> str:
    r = rows.iloc[i]
    keys = "/".join(str(r[k]) for k in MODEL_KEYS if k in rows.columns)
    return f"row {i}" + (f" ({keys})" if keys else "")


def _numeric(rows: pd.DataFrame, col: str, name: str, allow_nan: bool) -> np.ndarray:
    """The column as float64; a non-number (or, unless allowed, a NaN / infinity) is a UserError."""
    values = rows[col].tolist()
    out = np.empty(len(values))
    for i, v in enumerate(values):
        if v is None and allow_nan:
            v = math.nan
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise UserError(f"{name}: column {col!r} has a non-numeric value {v!r} at {_where(rows, i)}")
        if not allow_nan and not math.isfinite(v):
            raise UserError(f"{name}: column {col!r} has a non-finite value {v!r} at {_where(rows, i)}")
        out[i] = float(v)
    return out


def check_rows(rows, name: str = "results", required=REQUIRED, allow_nan: bool = False,
               min_methods: int = 2) -> pd.DataFrame:
    """Validated copy of a results table (metrics as float, method and dataset as str).

    Raises UserError, one line naming the bad column or value, on a missing column, a missing
    key, a non-numeric metric (NaN / infinity too unless `allow_nan`), a negative AD, a model
    listed twice or fewer than `min_methods` methods."""
    if not isinstance(rows, pd.DataFrame):
        raise UserError(f"{name}: expected a table of rows, got {type(rows).__name__}")
    missing = [c for c in required if c not in rows.columns]
    if missing:
        raise UserError(f"{name}: missing column {', '.join(map(repr, missing))}")
    if rows.empty:
        raise UserError(f"{name}: no rows")
    out = rows.reset_index(drop=True).copy()
    for key in MODEL_KEYS:
        bad = out[key].isna().to_numpy()
        if bad.any():
            raise UserError(f"{name}: column {key!r} has an empty value at {_where(out, int(bad.argmax()))}")
    for col in required:
        if col not in MODEL_KEYS:
            out[col] = _numeric(out, col, name, allow_nan)
    if "AD" in required and (out["AD"] < 0).any():
        i = int((out["AD"] < 0).to_numpy().argmax())
        raise UserError(f"{name}: column 'AD' has a negative value {float(out['AD'].iloc[i])!r} at {_where(out, i)}")
    out["dataset"] = out["dataset"].astype(str)
    out["method"] = out["method"].astype(str)
    dup = out.duplicated(list(MODEL_KEYS)).to_numpy()
    if dup.any():
        raise UserError(f"{name}: model listed twice at {_where(out, int(dup.argmax()))}")
    methods = method_order(out)
    if len(methods) < min_methods:
        raise UserError(f"{name}: need at least {min_methods} methods to compare, got "
                        f"{len(methods)} ({', '.join(methods)})")
    return out


def method_order(rows: pd.DataFrame) -> list[str]:
    """Methods in order of first appearance in the table (the tie-break order)."""
    return list(dict.fromkeys(rows["method"]))


def oriented(values, metric: str) -> np.ndarray:
    """Metric oriented higher-is-better (-FA, RA, -MIA, -AD, -JS)."""
    values = np.asarray(values, dtype=float)
    return values if metric not in LOWER_IS_BETTER else -values


def ranks(values, metric: str, method: str = "ordinal") -> np.ndarray:
    """Rank 1 = best by the metric's orientation; ties by position (`ordinal`) or averaged
    (`average`, scipy.stats.rankdata's method)."""
    return rankdata(-oriented(values, metric), method=method)


def constant(values) -> bool:
    """True when every value is the same: such a metric ranks nothing."""
    values = np.asarray(values, dtype=float)
    return bool(values.size == 0 or np.all(values == values[0]))


def method_means(rows: pd.DataFrame, columns=METRICS) -> pd.DataFrame:
    """Per method (in method order) the mean of each column over all its models."""
    order = method_order(rows)
    return pd.DataFrame(
        {c: [float(np.mean(rows.loc[rows["method"] == m, c].to_numpy(float))) for m in order]
         for c in columns},
        index=pd.Index(order, name="method"))


def num(x) -> float | None:
    """JSON-safe float: NaN / infinity / None -> None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None
