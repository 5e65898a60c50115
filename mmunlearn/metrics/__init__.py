"""Metric functions (pure numpy / scipy / sklearn, no model), each registered by name.

`METRICS[name]` -> function; every name is also importable from here, e.g.
`from mmunlearn.metrics import mia_auc`. Score arrays are numpy float64; scalar results are plain
Python floats / dicts with None where undefined (JSON-safe). The model-facing evaluation that
produces the inputs lives in `mmunlearn.metrics.evaluate`.
"""
from __future__ import annotations

from mmunlearn.metrics.registry import METRICS, metric
from mmunlearn.metrics.mia import (accuracy, loss_score, mia_attack, mia_auc, min_k_pp_score,
                                   min_k_score, zlib_score)
from mmunlearn.metrics.divergence import activation_distance, js_divergence, oracle_distance
from mmunlearn.metrics.recovery import kr_relearn
from mmunlearn.metrics.text import forget_quality, modality_alignment, rouge_l, truth_ratio
from mmunlearn.metrics.continual import continual_metrics, upper_triangular
from mmunlearn.metrics.rows import mia_features, normalize, row_correct, strict_match, text_match

__all__ = [
    "METRICS", "metric",
    "accuracy", "loss_score", "zlib_score", "min_k_score", "min_k_pp_score", "mia_auc",
    "mia_attack", "activation_distance", "js_divergence", "oracle_distance", "kr_relearn",
    "rouge_l", "truth_ratio", "forget_quality", "modality_alignment", "continual_metrics",
    "upper_triangular", "row_correct", "mia_features", "normalize", "text_match", "strict_match",
]
