"""ICU-Bench continual-unlearning metrics from the stage x task forget-accuracy matrix.

Convention: tasks are numbered 1..N and stages 0..N (stage 0 = the fine-tuned model, stage t =
after unlearning task t). `A` has N+1 rows; A[t][i] = forget accuracy on task i after stage t.
Column 0 is unused. Row 0 must hold the fine-tuned accuracy on EVERY task i = 1..N (the
reference of effectiveness); for t >= 1 only i <= t is read (entries i > t are ignored and may be
None/NaN). Rows may be ragged lists. An undefined entry (None/NaN) needed by a mean is skipped,
so stages that were not evaluated simply drop out.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from mmunlearn.metrics.registry import as_float, metric, to_numpy


def _matrix(A) -> np.ndarray:
    """(N+1) x (N+1) float matrix: None -> NaN, ragged rows padded with NaN."""
    if hasattr(A, "detach") or isinstance(A, np.ndarray):
        A = to_numpy(A).tolist()
    rows = [list(r) for r in A]
    n1 = len(rows)
    if n1 == 0:
        raise ValueError("continual: A is empty (it needs at least stage 0)")
    width = max(len(r) for r in rows)
    if width > n1:
        raise ValueError(f"continual: A has {n1} stages but {width} task columns "
                         "(expected N+1 of each, column 0 unused)")
    m = np.full((n1, n1), np.nan)
    for t, r in enumerate(rows):
        m[t, : len(r)] = [np.nan if v is None else float(v) for v in r]
    return m


def _ok(x: float) -> bool:
    return bool(np.isfinite(x))


@metric("continual_metrics")
def continual_metrics(A, ra: Sequence) -> dict:
    """ICU-Bench continual metrics (N = number of tasks, stages t = 0..N).

    - effectiveness = mean_{t>=1} (1 - A[t][t] / A[0][t]): how much of task t's knowledge the
      stage that unlearns it removes, relative to the fine-tuned model (t with A[0][t] = 0 skipped).
    - historical_preservation = mean over 1 <= i < t <= N of (1 - max(0, A[t][i] - A[i][i])):
      penalises forgotten tasks whose accuracy creeps back in later stages (None when N < 2).
    - retained_utility = [RA_t / RA_0 for t = 0..N] and retained_utility_final (its last value).
    - stability = {"utility_std": np.std (ddof=0) of retained utility over t,
      "largest_drop": max(0, max_t RU_{t-1} - RU_t) over consecutive defined stages}.
    Returns also "tasks": N. All values plain floats / None (JSON-safe).
    """
    a = _matrix(A)
    n = a.shape[0] - 1
    r = np.array([np.nan if v is None else float(v) for v in ra], dtype=np.float64)
    if len(r) != n + 1:
        raise ValueError(f"continual_metrics: A has {n + 1} stages but ra has {len(r)} values")

    eff = [1.0 - a[t, t] / a[0, t] for t in range(1, n + 1)
           if _ok(a[t, t]) and _ok(a[0, t]) and a[0, t] != 0]
    hist = [1.0 - max(0.0, a[t, i] - a[i, i]) for t in range(2, n + 1) for i in range(1, t)
            if _ok(a[t, i]) and _ok(a[i, i])]

    if _ok(r[0]) and r[0] != 0:
        ru = [as_float(v / r[0]) for v in r]
    else:
        ru = [None] * (n + 1)
    defined = [v for v in ru if v is not None]
    drops = [prev - cur for prev, cur in zip(defined, defined[1:])]
    return {
        "tasks": n,
        "effectiveness": as_float(np.mean(eff)) if eff else None,
        "historical_preservation": as_float(np.mean(hist)) if hist else None,
        "retained_utility": ru,
        "retained_utility_final": ru[-1],
        "stability": {
            "utility_std": as_float(np.std(defined)) if defined else None,
            "largest_drop": float(max([0.0] + drops)) if defined else None,
        },
    }


@metric("upper_triangular")
def upper_triangular(A, include_baseline: bool = False) -> list[dict]:
    """Long-format rows {"stage": t, "task": i, "accuracy": A[t][i]} for 1 <= i <= t (the
    defined, lower-triangle-in-(t, i) entries) — the table `dvc plots` draws as a heatmap.
    `include_baseline=True` adds stage 0 (the fine-tuned model) on every task. Undefined entries
    are left out."""
    a = _matrix(A)
    rows = []
    for t in range(a.shape[0]):
        last = a.shape[0] - 1 if (t == 0 and include_baseline) else t
        for i in range(1, last + 1):
            if _ok(a[t, i]):
                rows.append({"stage": t, "task": i, "accuracy": float(a[t, i])})
    return rows
