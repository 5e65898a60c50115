"""Knowledge recoverability (KR) by relearning."""
from __future__ import annotations

from mmunlearn.metrics.registry import metric


@metric("kr_relearn")
def kr_relearn(fa_relearned, fa_unlearned, fa_finetuned) -> float | None:
    """KR = (FA_relearned - FA_unlearned) / (FA_finetuned - FA_unlearned).

    Share of the forgotten accuracy that k relearning steps on a small forget subset bring back
    on the rest of the forget set (0 = nothing recovered, 1 = fully recovered; may leave [0, 1]).
    None when unlearning removed nothing (denominator <= 1e-9) or an input is None.
    """
    if fa_relearned is None or fa_unlearned is None or fa_finetuned is None:
        return None
    denom = float(fa_finetuned) - float(fa_unlearned)
    if denom <= 1e-9:
        return None
    return (float(fa_relearned) - float(fa_unlearned)) / denom
