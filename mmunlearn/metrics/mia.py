"""Accuracy and membership-inference metrics (scores: higher = more member-like).

Reference attacks: loss (Yeom et al. 2018), zlib ratio (Carlini et al. 2021, "Extracting
training data from LLMs"), Min-K% (Shi et al. 2024), Min-K%++ (Zhang et al. 2024); each is
summarised by the ROC-AUC of forget (members, label 1) vs holdout (non-members, label 0).
`mia_attack` is the Metric-Unreliability paper's attack whose member rate is the headline MIA.
sklearn is imported lazily to keep `import mmunlearn.metrics` cheap.
"""
from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np

from mmunlearn.metrics.registry import as_float, metric, to_numpy


@metric("accuracy")
def accuracy(correct) -> float | None:
    """Share of True in a bool array (FA on forget, RA on retain); None if empty."""
    c = to_numpy(correct, dtype=bool).ravel()
    return float(c.mean()) if c.size else None


@metric("loss_score")
def loss_score(logprob_mean) -> np.ndarray:
    """LOSS attack score = mean token log-likelihood of the answer (= -NLL; members score higher)."""
    return to_numpy(logprob_mean).ravel()


@metric("zlib_score")
def zlib_score(logprob_mean, texts: Sequence[str]) -> np.ndarray:
    """zlib attack score = mean token log-prob of the answer / len(zlib.compress(answer)) bytes.

    The zlib ratio of Carlini et al. as the Min-K% reference code computes it: mean token NLL
    (log perplexity) over zlib entropy (compressed UTF-8 bytes, default level), which normalises
    away how intrinsically predictable the text is. Negated (mean log-prob, not NLL) so that
    members score higher, like every score here. Takes the per-token MEAN, not the sum.
    """
    lp = to_numpy(logprob_mean).ravel()
    if len(lp) != len(texts):
        raise ValueError(f"zlib_score: {len(lp)} log-probs but {len(texts)} texts")
    sizes = np.array([len(zlib.compress(str(t).encode("utf-8"))) for t in texts], dtype=np.float64)
    return lp / sizes


def _lowest_k_mean(values: Sequence, k: float, name: str) -> np.ndarray:
    if not 0.0 < k <= 1.0:
        raise ValueError(f"{name}: k is a fraction in (0, 1], got {k!r}")
    out = np.empty(len(values), dtype=np.float64)
    for j, v in enumerate(values):
        v = to_numpy(v).ravel()
        if v.size == 0:
            raise ValueError(f"{name}: sample {j} has no answer tokens")
        n = max(1, int(v.size * k))  # floor, as in the Min-K% reference code, at least 1 token
        out[j] = np.partition(v, n - 1)[:n].mean()
    return out


@metric("min_k_score")
def min_k_score(token_logprobs: Sequence, k: float) -> np.ndarray:
    """Min-K% score: mean of the lowest floor(k*T) (>= 1) token log-probs of each answer.

    Non-members tend to contain a few very unlikely tokens; members do not (Shi et al. 2024).
    """
    return _lowest_k_mean(token_logprobs, k, "min_k_score")


@metric("min_k_pp_score")
def min_k_pp_score(token_zpp: Sequence, k: float) -> np.ndarray:
    """Min-K%++ score: Min-K% applied to the per-token z-scores
    (log p(x_t) - mu_t) / sigma_t, mu/sigma the mean/std of log p under p itself (Zhang et al.)."""
    return _lowest_k_mean(token_zpp, k, "min_k_pp_score")


@metric("mia_auc")
def mia_auc(member_scores, nonmember_scores) -> float | None:
    """ROC-AUC of members (label 1) vs non-members (label 0) by score; 0.5 = no leakage.

    Scores are rank-transformed first (AUC is rank-invariant), so +-inf scores are fine; NaN is
    an error. None if either side is empty.
    """
    from scipy.stats import rankdata
    from sklearn.metrics import roc_auc_score

    m = to_numpy(member_scores).ravel()
    n = to_numpy(nonmember_scores).ravel()
    if m.size == 0 or n.size == 0:
        return None
    s = np.concatenate([m, n])
    if np.isnan(s).any():
        raise ValueError("mia_auc: scores contain NaN")
    y = np.concatenate([np.ones(m.size), np.zeros(n.size)])
    return float(roc_auc_score(y, rankdata(s)))


def balanced_draws(n_members: int, n_nonmembers: int, draws: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`draws` seeded (member indices, non-member indices) pairs of equal size min(n_m, n_n): the
    smaller class whole, the larger one in equal chunks of a seeded permutation (a fresh
    permutation when one runs out), so its samples are used as evenly as the draws allow."""
    if int(draws) < 1:
        raise ValueError(f"mia_attack: draws must be >= 1, got {draws!r}")
    s = min(n_members, n_nonmembers)
    big = max(n_members, n_nonmembers)
    rng = np.random.default_rng([int(seed), 0x4D1A])
    perm, pos, out = rng.permutation(big), 0, []
    for _ in range(int(draws)):
        if pos + s > big:
            perm, pos = rng.permutation(big), 0
        chunk, whole = np.sort(perm[pos:pos + s]), np.arange(s)
        pos += s
        out.append((chunk, whole) if n_members > n_nonmembers else (whole, chunk))
    return out


def _oof_member_probability(x: np.ndarray, y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Out-of-fold p(member) of StandardScaler + LogisticRegression, stratified shuffled folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression()), x, y, cv=cv,
                             method="predict_proba")[:, 1]


def _attack_inputs(member_features, nonmember_features) -> tuple[np.ndarray, np.ndarray]:
    m, n = to_numpy(member_features), to_numpy(nonmember_features)
    m = m.reshape(-1, 1) if m.ndim == 1 else m  # 1-D = one feature per sample
    n = n.reshape(-1, 1) if n.ndim == 1 else n
    if m.size and n.size and m.shape[1] != n.shape[1]:
        raise ValueError(f"mia_attack: {m.shape[1]} member vs {n.shape[1]} non-member features")
    if not (np.isfinite(m).all() and np.isfinite(n).all()):
        raise ValueError("mia_attack: features contain NaN/inf")
    return m, n


@metric("mia_attack")
def mia_attack(member_features, nonmember_features, folds: int = 5, seed: int = 0, draws: int = 10) -> dict:
    """The paper's MIA (per-sample features max prob, -entropy, top1-top2 margin -> StandardScaler +
    LogisticRegression, stratified `folds`-fold out-of-fold predictions), trained class-balanced.

    A classifier fitted on unequal classes learns the prior: a model that never saw the forget set
    would be classed member ~never at forget:holdout = 1:4 and ~always at 4:1. So each of `draws`
    seeded draws (`balanced_draws`) fits on equal-size classes; a sample's p(member) is the mean of
    its out-of-fold probabilities over the draws it appears in. Subsampling rather than
    class_weight="balanced": every fit then sees exactly equal classes and evenly stratified folds,
    and no minority sample carries a large weight; the draws bring the unused samples of the
    larger class back in. Returns (JSON-safe):
    - member_rate: share of members with mean p >= 0.5 (the headline `MIA`; ~0.5 for a model that
      never saw them whatever the ratio, ~1 when memorised, lower = better forgotten);
    - nonmember_rate: the same share among non-members (~0.5 when nothing leaks);
    - auc: mean over draws of the draw's out-of-fold ROC-AUC; draws, class_size (per class).
    A sample of the larger class in no draw (only when it outnumbers the smaller one more than
    `draws` times) is left out of its rate. Folds are clamped to the class size; fewer than 2
    samples in a class -> None values.
    """
    from sklearn.metrics import roc_auc_score

    m, n = _attack_inputs(member_features, nonmember_features)
    if len(m) < 2 or len(n) < 2:
        return {"auc": None, "member_rate": None, "nonmember_rate": None, "draws": int(draws), "class_size": 0}
    sums = [np.zeros(len(m)), np.zeros(len(n))]
    counts = [np.zeros(len(m)), np.zeros(len(n))]
    aucs = []
    pairs = balanced_draws(len(m), len(n), draws, seed)
    k = max(2, min(int(folds), len(pairs[0][0])))
    for d, (mi, ni) in enumerate(pairs):
        x = np.vstack([m[mi], n[ni]])
        y = np.concatenate([np.ones(len(mi), dtype=int), np.zeros(len(ni), dtype=int)])
        p = _oof_member_probability(x, y, k, int(np.random.default_rng([int(seed), 0xF0, d]).integers(2**31)))
        aucs.append(roc_auc_score(y, p))
        for side, idx, q in ((0, mi, p[:len(mi)]), (1, ni, p[len(mi):])):
            np.add.at(sums[side], idx, q)
            np.add.at(counts[side], idx, 1)
    seen = [c > 0 for c in counts]  # all of the smaller class; of the larger, those drawn
    rate = [float((sums[i][seen[i]] / counts[i][seen[i]] >= 0.5).mean()) for i in (0, 1)]
    return {"auc": as_float(np.mean(aucs)), "member_rate": rate[0], "nonmember_rate": rate[1],
            "draws": len(pairs), "class_size": len(pairs[0][0])}
