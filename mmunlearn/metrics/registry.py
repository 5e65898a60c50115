"""Metric registry: every metric function is registered by name with `@metric("name")`.

`METRICS[name]` is the plain function (the decorator returns it unchanged), so callers can
either import a metric directly or look it up by the name used in params / outputs.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

METRICS: dict[str, Callable] = {}


def metric(name: str) -> Callable[[Callable], Callable]:
    """Register the decorated function as `METRICS[name]`; a name can be registered once."""

    def register(fn: Callable) -> Callable:
        if name in METRICS and METRICS[name] is not fn:
            raise ValueError(f"metric {name!r} is already registered ({METRICS[name].__module__})")
        METRICS[name] = fn
        return fn

    return register


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
