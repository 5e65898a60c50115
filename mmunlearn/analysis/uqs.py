"""Finding 3 and the Unified Quality Score: metric reliability against the retrained model,
UQS weights, the method ranking table and the ranking's stability under random weights."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, spearmanr

from mmunlearn.analysis.agreement import _quiet
from mmunlearn.analysis.table import METRICS, method_means, num, oriented, ranks

WEIGHT_FLOOR = 0.01


def reliability(rows: pd.DataFrame) -> dict[str, dict]:
    """Spearman rho (and p) over all models between each metric oriented higher-is-better and
    closeness to the retrained model (-retrained_distance): {metric: {spearman_r, p_value}}."""
    closeness = -rows["retrained_distance"].to_numpy(float)
    out = {}
    for m in METRICS:
        res = _quiet(spearmanr, oriented(rows[m], m), closeness)
        out[m] = {"spearman_r": num(res.statistic), "p_value": num(res.pvalue)}
    return out


def uqs_weights(rel: dict[str, dict]) -> dict[str, float]:
    """w_m = max(rho_m, 0.01) / sum_k max(rho_k, 0.01); an undefined rho counts as the floor."""
    floored = {m: max(rel[m]["spearman_r"] if rel[m]["spearman_r"] is not None else WEIGHT_FLOOR,
                      WEIGHT_FLOOR) for m in METRICS}
    total = sum(floored.values())
    return {m: v / total for m, v in floored.items()}


def uqs_scores(rows: pd.DataFrame, weights: dict[str, float]) -> pd.Series:
    """Per-row UQS = w_FA(1-FA) + w_RA RA + w_MIA(1-MIA) + w_AD/(1+AD) + w_JS(1-JS)."""
    return (weights["FA"] * (1.0 - rows["FA"])
            + weights["RA"] * rows["RA"]
            + weights["MIA"] * (1.0 - rows["MIA"])
            + weights["AD"] * (1.0 / (1.0 + rows["AD"]))
            + weights["JS"] * (1.0 - rows["JS"])).rename("UQS")


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


def weight_stability(rows: pd.DataFrame, weights: dict[str, float], draws: int = 100,
                     seed: int = 0, ties: str = "ordinal") -> dict:
    """Kendall tau between the UQS method ranking under `draws` weight vectors w ~ Dirichlet(1)
    (numpy default_rng(seed)) and the ranking under `weights`: {draws, seed, mean_tau, sd_tau
    (population sd), taus}; undefined taus are null and left out of mean and sd."""
    means = method_means(rows)
    ref = ranks(uqs_scores(means, weights).to_numpy(), "UQS", ties)
    draw = np.random.default_rng(seed).dirichlet(np.ones(len(METRICS)), size=draws)
    taus = []
    for w in draw:
        perturbed = ranks(uqs_scores(means, dict(zip(METRICS, w))).to_numpy(), "UQS", ties)
        taus.append(float(_quiet(kendalltau, ref, perturbed).statistic))
    defined = [t for t in taus if not np.isnan(t)]
    return {
        "draws": int(draws),
        "seed": int(seed),
        "mean_tau": num(np.mean(defined)) if defined else None,
        "sd_tau": num(np.std(defined)) if defined else None,
        "taus": [num(t) for t in taus],
    }
