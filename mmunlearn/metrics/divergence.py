"""Model-vs-oracle distances: activation distance (AD), Jensen-Shannon divergence (JS) of
next-token distributions, and the weight-space oracle distance d(M_hat, M_star).

All three compare the unlearned model with the oracle retrained on retain only; lower = closer
to the oracle = better unlearning (Metric-Unreliability paper, section 7 of the SPEC).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from mmunlearn.metrics.registry import as_float, metric, to_numpy

LN2 = float(np.log(2.0))


@metric("activation_distance")
def activation_distance(h_unlearned, h_oracle) -> float | None:
    """AD = mean_i ||h_i - h*_i||_2 over samples, h = mean-pooled hidden state [n, d] of the
    unlearned model and h* of the oracle on the same forget input. None if n = 0."""
    a = np.atleast_2d(to_numpy(h_unlearned))
    b = np.atleast_2d(to_numpy(h_oracle))
    if a.shape != b.shape:
        raise ValueError(f"activation_distance: shapes differ {a.shape} vs {b.shape}")
    if a.size == 0:
        return None
    return as_float(np.linalg.norm(a - b, axis=1).mean())


def _rows_normalised(p: np.ndarray, name: str, j: int) -> np.ndarray:
    p = np.clip(p, 0.0, None)
    s = p.sum(axis=1, keepdims=True)
    if (s <= 0).any() or not np.isfinite(s).all():
        raise ValueError(f"js_divergence: sample {j} of {name} has a row with no finite mass")
    return p / s


@metric("js_divergence")
def js_divergence(dist_unlearned: Sequence, dist_oracle: Sequence) -> float | None:
    """Mean Jensen-Shannon divergence between next-token distributions, natural log (nats,
    range [0, ln 2]): JS(P,Q) = 1/2 KL(P||M) + 1/2 KL(Q||M), M = (P+Q)/2, with 0 log 0 = 0.

    Sample j is a pair of arrays [T_j, V] and [T_j, V'] (one row per answer position).
    Distributions are ALIGNED BY TOKEN ID: column v is token id v in both; if V != V' the
    narrower one is zero-padded (ids outside a vocabulary have probability 0). Rows are
    clipped at 0 and renormalised. Mean over positions within a sample, then over samples;
    samples with T_j = 0 are skipped; None if nothing is left.
    Not scipy's `jensenshannon`, which returns the square root (a distance).
    """
    from scipy.special import rel_entr

    if len(dist_unlearned) != len(dist_oracle):
        raise ValueError(f"js_divergence: {len(dist_unlearned)} vs {len(dist_oracle)} samples")
    per_sample = []
    for j, (pu, po) in enumerate(zip(dist_unlearned, dist_oracle)):
        p = np.atleast_2d(to_numpy(pu))
        q = np.atleast_2d(to_numpy(po))
        if p.shape[0] != q.shape[0]:
            raise ValueError(f"js_divergence: sample {j} has {p.shape[0]} vs {q.shape[0]} positions")
        if p.shape[0] == 0:
            continue
        v = max(p.shape[1], q.shape[1])
        p = np.pad(p, ((0, 0), (0, v - p.shape[1])))
        q = np.pad(q, ((0, 0), (0, v - q.shape[1])))
        p = _rows_normalised(p, "dist_unlearned", j)
        q = _rows_normalised(q, "dist_oracle", j)
        m = 0.5 * (p + q)
        js = 0.5 * rel_entr(p, m).sum(axis=1) + 0.5 * rel_entr(q, m).sum(axis=1)
        per_sample.append(np.clip(js, 0.0, LN2).mean())
    return as_float(np.mean(per_sample)) if per_sample else None


@metric("oracle_distance")
def oracle_distance(weights_a: Mapping, weights_b: Mapping) -> float:
    """d(M_hat, M_star) = mean over the tensor names present in both state dicts of the L2
    (Frobenius) norm ||W_a - W_b||_F. Accepts torch tensors or arrays (float64 math).

    A shape mismatch raises ValueError naming the tensor; no common name raises too (almost
    always a key-prefix mismatch between the two state dicts).
    """
    common = sorted(set(weights_a) & set(weights_b))
    if not common:
        raise ValueError("oracle_distance: the two state dicts share no tensor name")
    norms = []
    for name in common:
        a = to_numpy(weights_a[name])
        b = to_numpy(weights_b[name])
        if a.shape != b.shape:
            raise ValueError(f"oracle_distance: tensor {name!r} has shape {a.shape} vs {b.shape}")
        norms.append(np.linalg.norm((a - b).ravel()))
    return float(np.mean(norms))
