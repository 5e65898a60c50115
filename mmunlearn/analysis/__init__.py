"""Metric-agreement analysis (SPEC section 8): do the unlearning metrics rank methods alike,
which metric tracks the retrained model, and the Unified Quality Score (UQS) built from that.

`analyze(rows)` returns the three released documents; `rows` has one row per unlearned model
(dataset, method, seed, FA, RA, MIA, AD, JS, retrained_distance; extra columns are ignored).
`kendall_taus(rows)` gives the tie-aware taus of any small table (e.g. a cross-architecture run)."""
from __future__ import annotations

import numbers

import pandas as pd

from mmunlearn.analysis.agreement import (contradiction_table, kendall_taus, metric_clusters, modality_compare,
                                          tau_document, tau_table, tie_rule)
from mmunlearn.analysis.table import METRICS, MODEL_KEYS, RELIABILITY, TIES, check_rows
from mmunlearn.analysis.uqs import ranking_table
from mmunlearn.analysis.uqs import reliability as pooled_reliability
from mmunlearn.analysis.uqs import reliability_within, uqs_scores, uqs_weights, weight_stability
from mmunlearn.errors import UserError

__all__ = ["METRICS", "RELIABILITY", "TIES", "analyze", "kendall_taus", "uqs_scores"]


def _check_options(ties: str, reliability: str, draws: int, seed: int) -> None:
    if ties not in TIES:
        raise UserError(f"ties: unknown tie rule {ties!r} (one of {', '.join(TIES)})")
    if reliability not in RELIABILITY:
        raise UserError(f"reliability: unknown choice {reliability!r} (one of {', '.join(RELIABILITY)})")
    for key, value in (("draws", draws), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < (1 if key == "draws" else 0):
            raise UserError(f"{key}: must be a {'positive' if key == 'draws' else 'non-negative'} integer, got {value!r}")


def analyze(rows: pd.DataFrame, unimodal: pd.DataFrame | None = None, ties: str = "tau_b",
            draws: int = 100, seed: int = 0, reliability: str = "within") -> dict:
    """{"analysis_results", "uqs_weights", "ranking_table"}, JSON-safe (null for undefined).

    `ties`: `tau_b` (tie-aware; groups where a metric is constant are left out of its pairs) or
    `ordinal` (ties broken by method order, as the paper) in the tau matrix and the stability
    taus. `reliability`: which Spearman figures feed the UQS weights, `within` (per-dataset rhos
    combined) or `pooled` (all models at once, as the paper); both are reported. `draws`
    Dirichlet(1) weight vectors from default_rng(`seed`). `ties="ordinal", reliability="pooled"`
    reproduces the paper's published figures."""
    _check_options(ties, reliability, draws, seed)
    rows = check_rows(rows, "results")
    if unimodal is not None and len(unimodal) > 0:
        unimodal = check_rows(unimodal, "unimodal", (*MODEL_KEYS, *METRICS), allow_nan=True, min_methods=1)
    else:
        unimodal = None

    table = tau_table(rows, ties)
    pooled, within = pooled_reliability(rows), reliability_within(rows)
    weights = uqs_weights(within if reliability == "within" else pooled)
    results = {
        "finding1_tau_matrix": tau_document(table, METRICS, ties),
        "finding1_contradiction": contradiction_table(rows),
        "finding2_modality_compare": modality_compare(rows, unimodal, ties),
        "finding3_reliability": pooled,
        "finding3_reliability_within": within,
        "clusters": metric_clusters(table.tau),
        "stability": weight_stability(rows, weights, draws, seed, ties),
        "n_models": int(len(rows)),
        "ties": tie_rule(ties),
        "reliability": reliability,
    }
    return {"analysis_results": results, "uqs_weights": weights, "ranking_table": ranking_table(rows, weights)}
