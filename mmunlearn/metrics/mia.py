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
def zlib_score(logprob_sum, texts: Sequence[str]) -> np.ndarray:
    """zlib attack score = log p(answer) / len(zlib.compress(answer.encode("utf-8"))).

    Carlini et al.'s ratio of model log-likelihood to zlib entropy (compressed bytes, default
    level): normalises away how intrinsically predictable the text is.
    """
    lp = to_numpy(logprob_sum).ravel()
    if len(lp) != len(texts):
        raise ValueError(f"zlib_score: {len(lp)} log-probs but {len(texts)} texts")
    sizes = np.array([len(zlib.compress(t.encode("utf-8"))) for t in texts], dtype=np.float64)
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


@metric("mia_attack")
def mia_attack(member_features, nonmember_features, folds: int = 5, seed: int = 0) -> dict:
    """The paper's MIA: per-sample features (max prob, -entropy, top1-top2 margin) ->
    StandardScaler + LogisticRegression, stratified shuffled `folds`-fold cross_val_predict.

    Returns {"auc": cross-validated ROC-AUC of the out-of-fold member probabilities,
    "member_rate": share of MEMBER samples with out-of-fold p(member) >= 0.5} — member_rate is
    the headline `MIA` (fraction of forget samples classed member; lower = better forgotten).
    Folds are clamped to the smaller class size; fewer than 2 samples in a class -> None values.
    A 1-D input is read as one feature per sample.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    m = to_numpy(member_features)
    n = to_numpy(nonmember_features)
    m = m.reshape(-1, 1) if m.ndim == 1 else m  # 1-D = one feature per sample
    n = n.reshape(-1, 1) if n.ndim == 1 else n
    if m.size == 0 or n.size == 0 or len(m) < 2 or len(n) < 2:
        return {"auc": None, "member_rate": None}
    if m.shape[1] != n.shape[1]:
        raise ValueError(f"mia_attack: {m.shape[1]} member vs {n.shape[1]} non-member features")
    x = np.vstack([m, n])
    if not np.isfinite(x).all():
        raise ValueError("mia_attack: features contain NaN/inf")
    y = np.concatenate([np.ones(len(m), dtype=int), np.zeros(len(n), dtype=int)])
    k = max(2, min(int(folds), len(m), len(n)))
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    model = make_pipeline(StandardScaler(), LogisticRegression())
    p = cross_val_predict(model, x, y, cv=cv, method="predict_proba")[:, 1]
    return {"auc": as_float(roc_auc_score(y, p)), "member_rate": float((p[: len(m)] >= 0.5).mean())}
