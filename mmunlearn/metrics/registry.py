"""Metric registry: every metric function is registered by name with `@metric("name", ...)`.

`METRICS[name]` is the plain function (the decorator returns it unchanged), so callers can
either import a metric directly or look it up by the name used in params / outputs. `INFO[name]`
holds what the rest of the product reads off a metric instead of keeping its own lists:

- `reads`: the evaluation inputs of a *row metric* (a column of the released rows, computed by
  every evaluator through `metrics.columns.row_values`; one file each in
  `mmunlearn/metrics/columns/`); empty for the building blocks
  (accuracy, AUCs, distances) that row metrics and evaluators call;
- `higher_is_better`: its orientation (the agreement analysis and the UQS orient by it);
- `headline`: compared across methods by the analysis (Kendall tau, reliability, UQS weights) and
  shown on the leaderboard;
- `bounded`: its values lie in [0, 1] (its UQS utility is then 1 - x when lower is better, else
  1 / (1 + x); `utility`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

METRICS: dict[str, Callable] = {}


@dataclass(frozen=True)
class MetricInfo:
    name: str
    fn: Callable
    higher_is_better: bool | None = None
    reads: tuple[str, ...] = ()
    headline: bool = False
    bounded: bool = True


INFO: dict[str, MetricInfo] = {}


def metric(name: str, *, higher_is_better: bool | None = None, reads: tuple[str, ...] = (),
           headline: bool = False, bounded: bool = True) -> Callable[[Callable], Callable]:
    """Register the decorated function as `METRICS[name]`, with its metadata in `INFO[name]`; a
    name can be registered once. A headline metric is a row metric with an orientation."""
    if headline and (not reads or higher_is_better is None):
        raise ValueError(f"headline metric {name!r} needs `reads` and `higher_is_better`")

    def register(fn: Callable) -> Callable:
        if name in METRICS and METRICS[name] is not fn:
            raise ValueError(f"metric {name!r} is already registered ({METRICS[name].__module__})")
        METRICS[name] = fn
        INFO[name] = MetricInfo(name, fn, higher_is_better, tuple(reads), headline, bounded)
        return fn

    return register


def utility(name: str, values):
    """A headline metric's values as UQS utilities in [0, 1], 1 = best: x where higher is better,
    1 - x where lower is better and values lie in [0, 1], 1 / (1 + x) for an unbounded distance."""
    info = INFO[name]
    if info.higher_is_better:
        return values
    return 1.0 - values if info.bounded else 1.0 / (1.0 + values)


# ---- small shared helpers (not metrics) -------------------------------------------------------

def to_numpy(x: Any, dtype: Any = np.float64) -> np.ndarray:
    """Array from a numpy array, list or torch tensor (detached, on CPU; bf16 upcast first).

    torch is never imported here: a tensor is recognised by its `.detach` method.
    """
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.float()
        x = x.numpy()
    return np.asarray(x, dtype=dtype)


def as_float(x: Any) -> float | None:
    """Plain Python float, or None for None / NaN / inf (JSON-safe)."""
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None
