"""Knowledge recoverability (KR) by relearning, and its oracle control.

All FA terms are scored by the one row definition (`metrics.rows.row_correct`) on the same test
rows (the forget rows not relearned on):

- KR = (FA_relearned - FA_unlearned) / (FA_finetuned - FA_unlearned): the share of the forgotten
  accuracy that k relearning steps bring back (0 = nothing, 1 = all of it).
- KR_vs_oracle = ((FA_relearned - FA_unlearned) - (FA_oracle_relearned - FA_oracle))
  / (FA_finetuned - FA_unlearned): the same recovery less what the oracle (retrained without the
  forget set, so it never knew these facts) gains from the same k steps on the same rows, i.e.
  recovery beyond plain learning of the relearning split. ~0 = the unlearned model relearns no
  faster than a model that never knew the data; > 0 = knowledge came back, not just learned anew.

Both are null, with a reason, when the denominator (what unlearning removed) is below
`metrics.kr_min_gap`: a near-zero gap turns noise into huge ratios (-7.0 with a gap of 0.03). With
the gap at least g, |KR| <= 1/g and |KR_vs_oracle| <= 2/g.
"""
from __future__ import annotations

from mmunlearn.metrics.registry import metric

_EPS = 1e-12  # a gap equal to the threshold up to float rounding passes (0.3 - 0.2 vs 0.1)


def kr_gap_reason(fa_unlearned, fa_finetuned, min_gap: float) -> str | None:
    """Why KR is undefined (None when it is defined): a missing FA, or a gap below `min_gap`."""
    if not 0.0 < float(min_gap) < 1.0:
        raise ValueError(f"metrics.kr_min_gap must be in (0, 1), got {min_gap!r}")
    if fa_unlearned is None or fa_finetuned is None:
        return f"FA_unlearned {fa_unlearned} or FA_finetuned {fa_finetuned} is missing"
    gap = float(fa_finetuned) - float(fa_unlearned)
    if gap < float(min_gap) - _EPS:
        return f"FA_finetuned - FA_unlearned = {gap:.4g} < metrics.kr_min_gap {float(min_gap):g}"
    return None


@metric("kr_relearn")
def kr_relearn(fa_relearned, fa_unlearned, fa_finetuned, min_gap: float) -> float | None:
    """KR = (FA_relearned - FA_unlearned) / (FA_finetuned - FA_unlearned); None when an input is
    missing or the denominator is below `min_gap` (`kr_gap_reason`)."""
    if fa_relearned is None or kr_gap_reason(fa_unlearned, fa_finetuned, min_gap) is not None:
        return None
    return (float(fa_relearned) - float(fa_unlearned)) / (float(fa_finetuned) - float(fa_unlearned))


@metric("kr_vs_oracle")
def kr_vs_oracle(fa_relearned, fa_unlearned, fa_finetuned, fa_oracle, fa_oracle_relearned,
                 min_gap: float) -> float | None:
    """KR_vs_oracle = ((FA_relearned - FA_unlearned) - (FA_oracle_relearned - FA_oracle))
    / (FA_finetuned - FA_unlearned); None under the same rule as `kr_relearn` or without the
    oracle's two FAs."""
    kr = kr_relearn(fa_relearned, fa_unlearned, fa_finetuned, min_gap)
    if kr is None or fa_oracle is None or fa_oracle_relearned is None:
        return None
    gain = float(fa_oracle_relearned) - float(fa_oracle)
    return kr - gain / (float(fa_finetuned) - float(fa_unlearned))


def kr_summary(fa_relearned, fa_unlearned, fa_finetuned, fa_oracle, fa_oracle_relearned,
               min_gap: float) -> dict:
    """{kr, kr_vs_oracle, kr_reason, kr_vs_oracle_reason}: the values and, where one is null,
    why (JSON-safe; reasons are None when the value is defined)."""
    reason = kr_gap_reason(fa_unlearned, fa_finetuned, min_gap)
    if reason is None and fa_relearned is None:
        reason = "FA_relearned is missing"
    kr = kr_relearn(fa_relearned, fa_unlearned, fa_finetuned, min_gap)
    vs = kr_vs_oracle(fa_relearned, fa_unlearned, fa_finetuned, fa_oracle, fa_oracle_relearned, min_gap)
    vs_reason = reason
    if vs_reason is None and vs is None:
        vs_reason = "no oracle for this forget set (FA_oracle / FA_oracle_relearned missing)"
    return {"kr": kr, "kr_vs_oracle": vs, "kr_reason": reason, "kr_vs_oracle_reason": vs_reason}
