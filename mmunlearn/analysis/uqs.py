"""Finding 3 and the Unified Quality Score: metric reliability against the retrained model
(pooled over all models as the paper, and within each dataset where the oracle distance is
comparable), UQS weights, the method ranking table and the ranking's stability under random
weights."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import combine_pvalues, kendalltau, spearmanr

from mmunlearn.analysis.agreement import _quiet, tie_rule
from mmunlearn.analysis.table import METRICS, method_means, num, oriented, ranks
from mmunlearn.metrics.registry import utility

WEIGHT_FLOOR = 0.01


def _spearman(x, y) -> tuple[float, float]:
    res = _quiet(spearmanr, x, y)
    return float(res.statistic), float(res.pvalue)


def reliability(rows: pd.DataFrame) -> dict[str, dict]:
    """The paper's pooled figure: Spearman rho (and p) over all models between each metric
    oriented higher-is-better and closeness to the retrained model (-retrained_distance):
    {metric: {spearman_r, p_value}}. Models of different datasets are measured against
    different oracles, so their distances are not on one scale; see `reliability_within`."""
    closeness = -rows["retrained_distance"].to_numpy(float)
    out = {}
    for m in METRICS:
        r, p = _spearman(oriented(rows[m], m), closeness)
        out[m] = {"spearman_r": num(r), "p_value": num(p)}
    return out


def combine_within(per_dataset: dict[str, dict]) -> tuple[float | None, float | None, list[str]]:
    """(rho, p, datasets used) from per-dataset {spearman_r, p_value, n}.

    rho = sum_d n_d rho_d / sum_d n_d (the n-weighted mean). p: weighted Stouffer test of the
    signed evidence: each dataset's two-sided p becomes the one-sided p of rho > 0 (p_d / 2 when
    rho_d > 0, else 1 - p_d / 2), scipy.stats.combine_pvalues(method="stouffer", weights =
    sqrt(n_d)) combines them, and the two-sided p is 2 min(p_c, 1 - p_c). One dataset gives back
    its own rho and p. Datasets whose rho or p is undefined (a constant metric or distance,
    fewer than 3 models) are left out; none left -> (None, None, [])."""
    used = {d: v for d, v in per_dataset.items() if v["spearman_r"] is not None and v["p_value"] is not None}
    if not used:
        return None, None, []
    n = np.array([v["n"] for v in used.values()], dtype=float)
    rho = np.array([v["spearman_r"] for v in used.values()])
    p = np.array([v["p_value"] for v in used.values()])
    one_sided = np.where(rho > 0, p / 2, 1 - p / 2)
    p_c = float(_quiet(combine_pvalues, one_sided, method="stouffer", weights=np.sqrt(n)).pvalue)
    return num(np.sum(n * rho) / np.sum(n)), num(2 * min(p_c, 1 - p_c)), list(used)


def reliability_within(rows: pd.DataFrame) -> dict[str, dict]:
    """Reliability measured where the oracle distance is comparable, inside one dataset (one
    oracle): per dataset the Spearman rho (and p, n) of the oriented metric vs -retrained_distance,
    combined by `combine_within`: {metric: {spearman_r, p_value, datasets, per_dataset: {dataset:
    {spearman_r, p_value, n}}}}; a dataset with a constant metric or distance has null rho."""
    out = {}
    for m in METRICS:
        per = {}
        for dataset, g in rows.groupby("dataset", sort=False):
            r, p = _spearman(oriented(g[m], m), -g["retrained_distance"].to_numpy(float))
            per[str(dataset)] = {"spearman_r": num(r), "p_value": num(p), "n": int(len(g))}
        rho, p, used = combine_within(per)
        out[m] = {"spearman_r": rho, "p_value": p, "datasets": used, "per_dataset": per}
    return out


def uqs_weights(rel: dict[str, dict]) -> dict[str, float]:
    """w_m = max(rho_m, 0.01) / sum_k max(rho_k, 0.01); an undefined rho counts as the floor."""
    floored = {m: max(rel[m]["spearman_r"] if rel[m]["spearman_r"] is not None else WEIGHT_FLOOR,
                      WEIGHT_FLOOR) for m in METRICS}
    total = sum(floored.values())
    return {m: v / total for m, v in floored.items()}


def uqs_scores(rows: pd.DataFrame, weights: dict[str, float]) -> pd.Series:
    """Per-row UQS = sum over the headline metrics of w_m utility_m (`registry.utility`):
    w_FA(1-FA) + w_RA RA + w_MIA(1-MIA) + w_AD/(1+AD) + w_JS(1-JS)."""
    return sum(weights[m] * utility(m, rows[m]) for m in METRICS).rename("UQS")


def ranking_table(rows: pd.DataFrame, weights: dict[str, float]) -> dict[str, dict]:
    """{method: {FA_rank, FA, ..., JS_rank, JS, UQS, UQS_rank}}: method means, their ranks (1 =
    best, ties by method order), and the UQS of the method means (as released), rounded to 4."""
    means = method_means(rows)
    uqs = uqs_scores(means, weights)
    rank = {m: ranks(means[m].to_numpy(), m, "ordinal") for m in METRICS}
    uqs_rank = ranks(uqs.to_numpy(), "UQS", "ordinal")
    table = {}
    for i, method in enumerate(means.index):
        row = {}
        for m in METRICS:
            row[f"{m}_rank"] = int(rank[m][i])
            row[m] = float(means[m].iloc[i])
        row["UQS"] = round(float(uqs.iloc[i]), 4)
        row["UQS_rank"] = int(uqs_rank[i])
        table[method] = row
    return table


def ranking_tau(ref, scores, ties: str = "tau_b") -> float:
    """Kendall tau between two score vectors of the same methods (higher = better): tau-b of the
    scores, or of their ordinal ranks (ties by method order, as the paper)."""
    if tie_rule(ties) == "ordinal":
        ref, scores = ranks(ref, "UQS", "ordinal"), ranks(scores, "UQS", "ordinal")
    return float(_quiet(kendalltau, ref, scores, variant="b").statistic)


def weight_stability(rows: pd.DataFrame, weights: dict[str, float], draws: int = 100,
                     seed: int = 0, ties: str = "tau_b") -> dict:
    """Kendall tau (`ranking_tau`) between the UQS method ranking under `draws` weight vectors
    w ~ Dirichlet(1) (numpy default_rng(seed)) and the ranking under `weights`: {draws, seed,
    mean_tau, sd_tau (population sd), taus}; undefined taus are null and left out of mean and sd."""
    means = method_means(rows)
    ref = uqs_scores(means, weights).to_numpy()
    draw = np.random.default_rng(seed).dirichlet(np.ones(len(METRICS)), size=draws)
    taus = [ranking_tau(ref, uqs_scores(means, dict(zip(METRICS, w))).to_numpy(), ties) for w in draw]
    defined = [t for t in taus if not np.isnan(t)]
    return {
        "draws": int(draws),
        "seed": int(seed),
        "mean_tau": num(np.mean(defined)) if defined else None,
        "sd_tau": num(np.std(defined)) if defined else None,
        "taus": [num(t) for t in taus],
    }
