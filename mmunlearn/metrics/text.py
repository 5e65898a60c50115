"""Answer-text metrics: ROUGE-L, TOFU truth ratio and forget quality, UMU-Bench modality alignment."""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np

from mmunlearn.metrics.registry import as_float, metric, to_numpy


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


@metric("rouge_l")
def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """ROUGE-L F-measure per (prediction, reference) pair, rouge_score without stemming
    (LCS-based; its tokenizer lowercases and keeps [a-z0-9] runs). Empty text scores 0."""
    if len(predictions) != len(references):
        raise ValueError(f"rouge_l: {len(predictions)} predictions vs {len(references)} references")
    s = _scorer()
    return np.array([s.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references)],
                    dtype=np.float64)


@metric("truth_ratio")
def truth_ratio(logprob_mean_correct, logprob_mean_wrong) -> np.ndarray:
    """TOFU truth ratio per sample: R = mean_j P(wrong_j|q)^(1/|wrong_j|) / P(correct|q)^(1/|correct|)
    = mean_j exp(lp_wrong_j - lp_correct), lp = per-token mean log-likelihood (so both are
    length-normalised probabilities). R < 1: the model prefers the correct answer; R ~ 1: it
    cannot tell it from the wrong options (what forgetting should look like). Computed from the
    log difference (no under/overflow of the separate probabilities). `logprob_mean_wrong` is
    [n, k], or a ragged list of per-sample arrays (k may vary)."""
    c = to_numpy(logprob_mean_correct).ravel()
    if len(logprob_mean_wrong) != c.size:
        raise ValueError(f"truth_ratio: {c.size} correct vs {len(logprob_mean_wrong)} wrong rows")
    out = np.empty(c.size, dtype=np.float64)
    for j, w in enumerate(logprob_mean_wrong):
        w = to_numpy(w).ravel()
        if w.size == 0:
            raise ValueError(f"truth_ratio: sample {j} has no wrong options")
        out[j] = np.exp(w - c[j]).mean()
    return out


@metric("forget_quality")
def forget_quality(truth_ratio_unlearned, truth_ratio_oracle) -> dict:
    """Two-sample KS test (scipy.stats.ks_2samp, two-sided) of the forget-set truth ratios of the
    unlearned model vs the oracle. TOFU's forget quality is the p-value (high = indistinguishable
    from the oracle). {"ks_stat", "p_value"}; None values if either side is empty."""
    from scipy.stats import ks_2samp

    a = to_numpy(truth_ratio_unlearned).ravel()
    b = to_numpy(truth_ratio_oracle).ravel()
    if a.size == 0 or b.size == 0:
        return {"ks_stat": None, "p_value": None}
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("forget_quality: truth ratios contain NaN")
    res = ks_2samp(a, b)
    return {"ks_stat": as_float(res.statistic), "p_value": as_float(res.pvalue)}


_VIEWS = ("text", "vqa_masked")


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


@metric("modality_alignment")
def modality_alignment(frame) -> dict:
    """UMU-Bench modality-aligned scores over unimodal/multimodal question pairs.

    `frame` columns: pair_id, view ("text" = unimodal, "vqa_masked" = multimodal view of the same
    question; other views ignored), split ("forget"/"retain"; others ignored), correct (bool),
    rouge (ROUGE-L in [0, 1]). A pair is keyed by (split, pair_id) and counts only when both views
    are present (one row each; duplicates raise).
    - AccF / AccR: share of forget / retain pairs answered correctly in BOTH views.
    - RLF = mean over forget pairs of (a^2+b^2)/(a+b) (contraharmonic mean: >= (a+b)/2 and
      pulled towards max(a, b), i.e. dominated by the view that still remembers, so forgetting
      in only one modality is not rewarded; lower = better).
    - RLR = mean over retain pairs of 2ab/(a+b) (harmonic mean: dominated by the weaker view, so
      retention must hold in both modalities; higher = better).
    a, b = ROUGE-L of the text and the vqa_masked answer; 0/0 := 0. The UMU-Bench README names
    AccF/AccR/RLF/RLR as its modality-alignment metrics without formulas; the formulas are the
    SPEC's (section 7). Returns {"AccF","AccR","RLF","RLR","pairs_forget","pairs_retain"}
    with None scores for a split without pairs.
    """
    need = {"pair_id", "view", "split", "correct", "rouge"}
    missing = need - set(frame.columns)
    if missing:
        raise ValueError(f"modality_alignment: missing columns {sorted(missing)}")
    f = frame[frame["view"].isin(_VIEWS) & frame["split"].isin(("forget", "retain"))]
    dup = f.duplicated(["split", "pair_id", "view"])
    if dup.any():
        raise ValueError("modality_alignment: duplicate (split, pair_id, view) rows, e.g. "
                         f"{f.loc[dup, ['split', 'pair_id', 'view']].iloc[0].tolist()}")
    keys = ["split", "pair_id"]
    cols = keys + ["correct", "rouge"]
    pairs = f.loc[f["view"] == "text", cols].merge(
        f.loc[f["view"] == "vqa_masked", cols], on=keys, suffixes=("_t", "_m"))
    out: dict = {}
    for split, acc_key, rl_key in (("forget", "AccF", "RLF"), ("retain", "AccR", "RLR")):
        p = pairs[pairs["split"] == split]
        n = len(p)
        out[f"pairs_{split}"] = n
        if n == 0:
            out[acc_key] = out[rl_key] = None
            continue
        both = p["correct_t"].astype(bool).to_numpy() & p["correct_m"].astype(bool).to_numpy()
        a = p["rouge_t"].to_numpy(dtype=np.float64)
        b = p["rouge_m"].to_numpy(dtype=np.float64)
        num = a * a + b * b if split == "forget" else 2.0 * a * b
        out[acc_key] = float(both.mean())
        out[rl_key] = as_float(_safe_div(num, a + b).mean())
    return {k: out[k] for k in ("AccF", "AccR", "RLF", "RLR", "pairs_forget", "pairs_retain")}
