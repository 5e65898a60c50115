"""Metric-agreement analysis (SPEC section 8): do the unlearning metrics rank methods alike,
which metric tracks the retrained model, and the Unified Quality Score (UQS) built from that.

`analyze(rows)` returns the three released documents; `rows` has one row per unlearned model
(dataset, method, seed, FA, RA, MIA, AD, JS, retrained_distance; extra columns are ignored)."""
from __future__ import annotations

import numbers

import pandas as pd

from mmunlearn.analysis.agreement import (contradiction_table, metric_clusters, modality_compare,
                                          tau_matrix)
from mmunlearn.analysis.table import METRICS, MODEL_KEYS, TIES, check_rows, num
from mmunlearn.analysis.uqs import ranking_table, reliability, uqs_scores, uqs_weights, weight_stability
from mmunlearn.errors import UserError

__all__ = ["METRICS", "analyze", "uqs_scores"]


def analyze(rows: pd.DataFrame, unimodal: pd.DataFrame | None = None, ties: str = "ordinal",
            draws: int = 100, seed: int = 0) -> dict:
    """{"analysis_results", "uqs_weights", "ranking_table"}, JSON-safe (null for undefined).

    `ties`: `ordinal` (ties broken by method order, as the paper) or `average` ranks in the tau
    matrix and the stability taus; `draws` Dirichlet(1) weight vectors from default_rng(`seed`)."""
    if ties not in TIES:
        raise UserError(f"ties: unknown tie rule {ties!r} (one of {', '.join(TIES)})")
    for key, value in (("draws", draws), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < (1 if key == "draws" else 0):
            raise UserError(f"{key}: must be a {'positive' if key == 'draws' else 'non-negative'} integer, got {value!r}")
    rows = check_rows(rows, "results")
    if unimodal is not None and len(unimodal) > 0:
        unimodal = check_rows(unimodal, "unimodal", (*MODEL_KEYS, *METRICS), allow_nan=True, min_methods=1)
    else:
        unimodal = None

    tau, p = tau_matrix(rows, ties)
    rel = reliability(rows)
    weights = uqs_weights(rel)
    results = {
        "finding1_tau_matrix": {
            "tau_matrix": [[num(x) for x in r] for r in tau],
            "p_matrix": [[num(x) for x in r] for r in p],
            "metric_names": list(METRICS),
        },
        "finding1_contradiction": contradiction_table(rows),
        "finding2_modality_compare": modality_compare(rows, unimodal, ties),
        "finding3_reliability": rel,
        "clusters": metric_clusters(tau),
        "stability": weight_stability(rows, weights, draws, seed, ties),
        "n_models": int(len(rows)),
        "ties": ties,
    }
    return {"analysis_results": results, "uqs_weights": weights, "ranking_table": ranking_table(rows, weights)}
