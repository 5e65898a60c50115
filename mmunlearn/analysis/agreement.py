"""Finding 1 and 2: do the metrics rank the unlearning methods alike?

Kendall tau matrix of the per-(dataset, seed) method rankings (tie-aware tau-b by default, or the
paper's ordinal tie-break), its t-test p-values and group counts, the metric clusters, the
per-method contradiction table and the multimodal-vs-unimodal agreement."""
from __future__ import annotations

import warnings
from itertools import combinations
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform
from scipy.stats import kendalltau, ttest_1samp

from mmunlearn.analysis.table import (METRICS, MODEL_KEYS, TIES, check_rows, constant, method_means, method_order,
                                     num, oriented, ranks)
from mmunlearn.errors import UserError


def _quiet(fn, *args, **kw):
    """Call a scipy statistic without its constant-input / small-sample warnings (NaN says it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


def tie_rule(ties: str) -> str:
    """The tie rule `ties` names (`tau_b` or `ordinal`); UserError for any other value."""
    if ties not in TIES:
        raise UserError(f"ties: unknown tie rule {ties!r} (one of {', '.join(TIES)})")
    return ties


def group_label(dataset, seed) -> str:
    """How a (dataset, seed) group is named in reports: `icu/0`."""
    return f"{dataset}/{seed}"


class PairTaus(NamedTuple):
    taus: list[float]      # one per informative group, in order of appearance
    groups: list[str]      # those groups' labels
    excluded: list[str]    # groups of >= 2 methods left out of this pair


def group_taus(rows: pd.DataFrame, a: str, b: str, ties: str = "tau_b") -> PairTaus:
    """Kendall tau between the methods' oriented values of metrics `a` and `b`, per (dataset,
    seed) group of at least 2 methods.

    `tau_b`: scipy's tie-aware tau-b of the oriented values; a group where `a` or `b` is constant
    ranks nothing and is excluded. `ordinal`: tau of ordinal ranks, ties broken by method order
    (first appearance), as the paper: every group counts, and two constant metrics get tau = 1
    (the ranks both follow method order) -- an agreement manufactured by the tie-break. Either
    way a group with a NaN value of `a` or `b` is excluded."""
    ties = tie_rule(ties)
    order = {m: i for i, m in enumerate(method_order(rows))}
    out = PairTaus([], [], [])
    for (dataset, seed), g in rows.groupby(["dataset", "seed"], sort=False, dropna=False):
        if len(g) < 2:
            continue
        label = group_label(dataset, seed)
        g = g.iloc[np.argsort(g["method"].map(order).to_numpy(), kind="stable")]
        x, y = g[a].to_numpy(float), g[b].to_numpy(float)
        if np.isnan(x).any() or np.isnan(y).any() or (ties == "tau_b" and (constant(x) or constant(y))):
            out.excluded.append(label)
            continue
        if ties == "ordinal":
            tau = _quiet(kendalltau, ranks(x, a, "ordinal"), ranks(y, b, "ordinal")).statistic
        else:
            tau = _quiet(kendalltau, oriented(x, a), oriented(y, b), variant="b").statistic
        out.taus.append(float(tau))
        out.groups.append(label)
    return out


class TauTable(NamedTuple):
    tau: np.ndarray                  # mean group tau; NaN where no group is informative
    p: np.ndarray                    # t-test p of the group taus against 0; NaN under 2 groups
    n_groups: np.ndarray             # informative groups per pair (diagonal: per metric)
    excluded: dict[str, list[str]]   # "FA|MIA": groups left out of that pair


def pair_key(a: str, b: str) -> str:
    return f"{a}|{b}"


def tau_table(rows: pd.DataFrame, ties: str = "tau_b", metrics=METRICS) -> TauTable:
    """Section 8's tau matrix with its group counts: per metric pair the mean of the informative
    group taus (`group_taus`), the one-sample t-test p of those taus against 0, their number,
    and the groups left out. Diagonal: tau 1, p 0, n = groups where that metric ranks."""
    n = len(metrics)
    tau, p, count = np.eye(n), np.zeros((n, n)), np.zeros((n, n), dtype=int)
    excluded = {}
    for i in range(n):
        count[i, i] = len(group_taus(rows, metrics[i], metrics[i], ties).taus)
    for i, j in combinations(range(n), 2):
        pt = group_taus(rows, metrics[i], metrics[j], ties)
        taus = [t for t in pt.taus if not np.isnan(t)]
        tau[i, j] = tau[j, i] = float(np.mean(taus)) if taus else np.nan
        p[i, j] = p[j, i] = float(_quiet(ttest_1samp, taus, 0.0).pvalue) if len(taus) >= 2 else np.nan
        count[i, j] = count[j, i] = len(taus)
        excluded[pair_key(metrics[i], metrics[j])] = pt.excluded
    return TauTable(tau, p, count, excluded)


def tau_matrix(rows: pd.DataFrame, ties: str = "tau_b", metrics=METRICS) -> tuple[np.ndarray, np.ndarray]:
    """(tau, p) of `tau_table`."""
    t = tau_table(rows, ties, metrics)
    return t.tau, t.p


def tau_document(table: TauTable, metrics=METRICS, ties: str = "tau_b") -> dict:
    """`finding1_tau_matrix`: the released keys (tau_matrix, p_matrix, metric_names; null where
    undefined) plus n_groups, excluded_groups and the tie rule."""
    return {
        "tau_matrix": [[num(x) for x in r] for r in table.tau],
        "p_matrix": [[num(x) for x in r] for r in table.p],
        "metric_names": list(metrics),
        "n_groups": table.n_groups.tolist(),
        "excluded_groups": table.excluded,
        "ties": tie_rule(ties),
    }


def kendall_taus(rows, metrics=METRICS, ties: str = "tau_b") -> dict[str, dict]:
    """Tie-aware taus of a small results table (e.g. a two-method cross-architecture run):
    {"FA_RA": {"tau", "p_value", "n_groups", "excluded_groups"}, ...} for every metric pair, in
    metric order; `tau` is null when no (dataset, seed) group ranks both metrics. `rows`: a
    DataFrame or a list of row dicts with dataset, method, seed and the `metrics` columns."""
    frame = check_rows(pd.DataFrame(rows) if not isinstance(rows, pd.DataFrame) else rows,
                       "rows", (*MODEL_KEYS, *metrics), allow_nan=True)
    t = tau_table(frame, ties, metrics)
    out = {}
    for i, j in combinations(range(len(metrics)), 2):
        out[f"{metrics[i]}_{metrics[j]}"] = {
            "tau": num(t.tau[i, j]), "p_value": num(t.p[i, j]), "n_groups": int(t.n_groups[i, j]),
            "excluded_groups": t.excluded[pair_key(metrics[i], metrics[j])]}
    return out


def mean_off_diagonal(matrix: np.ndarray) -> float:
    """Mean of the off-diagonal entries (NaN skipped; NaN if none)."""
    off = matrix[~np.eye(len(matrix), dtype=bool)]
    off = off[~np.isnan(off)]
    return float(np.mean(off)) if off.size else np.nan


def metric_clusters(tau: np.ndarray, metrics=METRICS, k: int = 2) -> list[list[str]]:
    """Average-linkage hierarchical clustering of the distance 1 - tau, cut into `k` clusters;
    each cluster in metric order, clusters by their first metric. An undefined (null) tau, a
    pair no group ranks, counts as 0 agreement: distance 1, neither near nor opposed."""
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


def modality_compare(rows: pd.DataFrame, unimodal: pd.DataFrame | None, ties: str = "tau_b") -> dict:
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
