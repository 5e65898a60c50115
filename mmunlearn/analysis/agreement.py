"""Finding 1 and 2: do the metrics rank the unlearning methods alike?

Kendall tau matrix of the per-(dataset, seed) method rankings, its t-test p-values, the metric
clusters, the per-method contradiction table and the multimodal-vs-unimodal agreement."""
from __future__ import annotations

import warnings
from itertools import combinations

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform
from scipy.stats import kendalltau, ttest_1samp

from mmunlearn.analysis.table import METRICS, method_means, method_order, num, ranks


def _quiet(fn, *args, **kw):
    """Call a scipy statistic without its constant-input / small-sample warnings (NaN says it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


def group_taus(rows: pd.DataFrame, a: str, b: str, ties: str = "ordinal") -> list[float]:
    """Kendall tau between the method rankings by metrics `a` and `b`, one per (dataset, seed)
    group of at least 2 methods, in order of appearance. Methods are ranked in method order, so
    `ordinal` breaks ties by it; a group with a NaN value of `a` or `b` is left out; a tau that
    is undefined (a constant metric under `average`) is NaN."""
    order = {m: i for i, m in enumerate(method_order(rows))}
    taus = []
    for _, g in rows.groupby(["dataset", "seed"], sort=False, dropna=False):
        if len(g) < 2:
            continue
        g = g.iloc[np.argsort(g["method"].map(order).to_numpy(), kind="stable")]
        x, y = g[a].to_numpy(float), g[b].to_numpy(float)
        if np.isnan(x).any() or np.isnan(y).any():
            continue
        taus.append(float(_quiet(kendalltau, ranks(x, a, ties), ranks(y, b, ties)).statistic))
    return taus


def tau_matrix(rows: pd.DataFrame, ties: str = "ordinal", metrics=METRICS) -> tuple[np.ndarray, np.ndarray]:
    """(tau, p): mean group tau per metric pair and the one-sample t-test p of the group taus
    against 0. NaN group taus are skipped; a pair with no defined group (or, for p, fewer than
    two) is NaN. Diagonal: tau 1, p 0."""
    n = len(metrics)
    tau, p = np.eye(n), np.zeros((n, n))
    for i, j in combinations(range(n), 2):
        taus = [t for t in group_taus(rows, metrics[i], metrics[j], ties) if not np.isnan(t)]
        t_ij = float(np.mean(taus)) if taus else np.nan
        p_ij = float(_quiet(ttest_1samp, taus, 0.0).pvalue) if len(taus) >= 2 else np.nan
        tau[i, j] = tau[j, i] = t_ij
        p[i, j] = p[j, i] = p_ij
    return tau, p


def mean_off_diagonal(matrix: np.ndarray) -> float:
    """Mean of the off-diagonal entries (NaN skipped; NaN if none)."""
    off = matrix[~np.eye(len(matrix), dtype=bool)]
    off = off[~np.isnan(off)]
    return float(np.mean(off)) if off.size else np.nan


def metric_clusters(tau: np.ndarray, metrics=METRICS, k: int = 2) -> list[list[str]]:
    """Average-linkage hierarchical clustering of the distance 1 - tau, cut into `k` clusters;
    each cluster in metric order, clusters by their first metric. An undefined tau counts as 0."""
    dist = 1.0 - np.nan_to_num(tau, nan=0.0)
    dist = np.clip((dist + dist.T) / 2.0, 0.0, None)
    np.fill_diagonal(dist, 0.0)
    labels = fcluster(linkage(squareform(dist, checks=False), method="average"), t=k, criterion="maxclust")
    clusters: dict[int, list[str]] = {}
    for metric, label in zip(metrics, labels):
        clusters.setdefault(int(label), []).append(metric)
    return list(clusters.values())


def contradiction_table(rows: pd.DataFrame) -> list[dict]:
    """Per method: its mean score on each metric (rounded to 4) and its rank among the methods
    by that mean (1 = best by orientation; ties broken by method order)."""
    means = method_means(rows)
    rank = {m: ranks(means[m].to_numpy(), m, "ordinal") for m in METRICS}
    table = []
    for i, method in enumerate(means.index):
        row = {"method": method}
        row.update({f"{m}_score": round(float(means[m].iloc[i]), 4) for m in METRICS})
        row.update({f"{m}_rank": int(rank[m][i]) for m in METRICS})
        table.append(row)
    return table


def mean_pairwise_tau(rows: pd.DataFrame, metrics=METRICS) -> float:
    """The paper's modality agreement: mean over metric pairs of the Kendall tau between the raw
    metric values pooled over all models (not oriented, not grouped). Models where either value
    is NaN are dropped per pair; a pair with a constant metric is skipped; NaN if no pair is left."""
    taus = []
    for a, b in combinations(metrics, 2):
        x, y = rows[a].to_numpy(float), rows[b].to_numpy(float)
        keep = ~(np.isnan(x) | np.isnan(y))
        x, y = x[keep], y[keep]
        if len(np.unique(x)) < 2 or len(np.unique(y)) < 2:
            continue
        taus.append(float(_quiet(kendalltau, x, y).statistic))
    taus = [t for t in taus if not np.isnan(t)]
    return float(np.mean(taus)) if taus else np.nan


def modality_finding(multimodal_tau: float, unimodal_tau: float | None) -> str:
    """One sentence on how much less the metrics agree on multimodal than on unimodal runs."""
    if np.isnan(multimodal_tau):
        return "No multimodal metric pair has a defined Kendall tau, so agreement cannot be compared."
    if unimodal_tau is None or np.isnan(unimodal_tau):
        return (f"No unimodal comparison: the multimodal mean pairwise Kendall tau is "
                f"{multimodal_tau:.3f}, with no unimodal runs (or no defined unimodal tau) to compare it with.")
    delta = unimodal_tau - multimodal_tau
    how = "lower" if delta > 0 else "higher" if delta < 0 else "no different"
    size = f"{abs(delta):.3f} " if delta != 0 else ""
    return (f"Metric agreement is {size}{how} in multimodal settings (mean pairwise Kendall tau "
            f"{multimodal_tau:.3f} multimodal vs {unimodal_tau:.3f} unimodal).")


def modality_compare(rows: pd.DataFrame, unimodal: pd.DataFrame | None, ties: str = "ordinal") -> dict:
    """Finding 2: mean pairwise tau on multimodal vs unimodal runs, delta = unimodal - multimodal
    (null without unimodal rows). The `grouped_*` keys repeat it with the mean off-diagonal
    entry of the section-8 tau matrix."""
    has_uni = unimodal is not None and len(unimodal) > 0
    mm = mean_pairwise_tau(rows)
    uni = mean_pairwise_tau(unimodal) if has_uni else None
    g_mm = mean_off_diagonal(tau_matrix(rows, ties)[0])
    g_uni = mean_off_diagonal(tau_matrix(unimodal, ties)[0]) if has_uni else None
    return {
        "multimodal_mean_tau": num(mm),
        "unimodal_mean_tau": num(uni),
        "delta": num(uni - mm) if has_uni else None,
        "finding": modality_finding(mm, uni),
        "grouped_multimodal_mean_tau": num(g_mm),
        "grouped_unimodal_mean_tau": num(g_uni),
        "grouped_delta": num(g_uni - g_mm) if has_uni else None,
    }
