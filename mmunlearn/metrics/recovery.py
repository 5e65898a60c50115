"""Knowledge recoverability (KR) by relearning, and its two controls.

All FA terms are scored by the one row definition (`metrics.rows.row_correct`) on the same test
rows (the forget rows not relearned on), after the same relearning (folds, steps, seed):

- r = min(1, FA_finetuned_relearned / FA_finetuned), the *retention* of the relearning: the share
  of known facts that survive it on the fine-tuned model, which has nothing to recover. k LoRA
  steps on some facts also disturb the others (at scale small the fine-tuned model keeps 0.91 of
  its `fiu` forget facts), so a model that still knows many facts can score lower after relearning
  than before (raw KR -0.36 on MANU `fiu`) although nothing was hidden or recovered.
- KR = (FA_relearned / r - FA_unlearned) / (FA_finetuned - FA_unlearned): the share of the
  forgotten accuracy that the relearning brings back, net of its own damage (the relearned model
  is assumed to keep a share r of what it knows, as the fine-tuned model does, so FA_relearned / r
  is what it would know undisturbed). 0 = nothing came back, 1 = all of it. With r = 1 (no
  damage) this is the usual (FA_relearned - FA_unlearned) / (FA_finetuned - FA_unlearned);
  `kr_uncorrected` keeps that value beside it.
- KR_vs_oracle = KR - (FA_oracle_relearned - FA_oracle) / (FA_finetuned - FA_unlearned): the same
  recovery less what the oracle (retrained without the forget set: it never knew these facts)
  gains from the same relearning, i.e. recovery beyond plain learning of the relearning split.
  ~0 = the unlearned model relearns no faster than a model that never knew the data.

Both are null, with a reason, when what can be recovered is below `metrics.kr_min_gap`: the gap
FA_finetuned - FA_unlearned (a near-zero gap turns noise into huge ratios: -7.0 with a gap of
0.03), or the gap after the relearning's damage, r (FA_finetuned - FA_unlearned). With both at
least g, |KR| <= 1/g and |KR_vs_oracle| <= 2/g.
"""
from __future__ import annotations

from mmunlearn.metrics.registry import metric

_EPS = 1e-12  # a gap equal to the threshold up to float rounding passes (0.3 - 0.2 vs 0.1)


def _check_gap(min_gap: float) -> float:
    if not 0.0 < float(min_gap) < 1.0:
        raise ValueError(f"metrics.kr_min_gap must be in (0, 1), got {min_gap!r}")
    return float(min_gap)


def kr_gap_reason(fa_unlearned, fa_finetuned, min_gap: float) -> str | None:
    """Why KR is undefined before any relearning (None when it may be defined): a missing FA, or
    a gap FA_finetuned - FA_unlearned below `min_gap`."""
    g = _check_gap(min_gap)
    if fa_unlearned is None or fa_finetuned is None:
        return f"FA_unlearned {fa_unlearned} or FA_finetuned {fa_finetuned} is missing"
    gap = float(fa_finetuned) - float(fa_unlearned)
    if gap < g - _EPS:
        return f"FA_finetuned - FA_unlearned = {gap:.4g} < metrics.kr_min_gap {g:g}"
    return None


def retention(fa_finetuned, fa_finetuned_relearned) -> float | None:
    """r = min(1, FA_finetuned_relearned / FA_finetuned); None when either is missing or
    FA_finetuned is 0. Capped at 1: what the relearning teaches is the oracle control's part."""
    if fa_finetuned is None or fa_finetuned_relearned is None or float(fa_finetuned) <= 0:
        return None
    return min(1.0, float(fa_finetuned_relearned) / float(fa_finetuned))


def kr_reason(*, fa_relearned, fa_unlearned, fa_finetuned, fa_finetuned_relearned, min_gap: float) -> str | None:
    """Why KR is null (None when it is defined): `kr_gap_reason`, a missing relearned FA or
    fine-tuned control, or the damaged gap r (FA_finetuned - FA_unlearned) below `min_gap`."""
    reason = kr_gap_reason(fa_unlearned, fa_finetuned, min_gap)
    if reason is not None:
        return reason
    if fa_relearned is None:
        return "FA_relearned is missing"
    r = retention(fa_finetuned, fa_finetuned_relearned)
    if r is None:
        return "no fine-tuned relearning control (FA_finetuned_relearned missing)"
    if r * (float(fa_finetuned) - float(fa_unlearned)) < float(min_gap) - _EPS:
        return f"retention r = {r:.4g}: the relearning leaves a gap below metrics.kr_min_gap {float(min_gap):g}"
    return None


@metric("kr_relearn")
def kr_relearn(*, fa_relearned, fa_unlearned, fa_finetuned, fa_finetuned_relearned, min_gap: float) -> float | None:
    """KR = (FA_relearned / r - FA_unlearned) / (FA_finetuned - FA_unlearned), r = `retention`;
    None where `kr_reason` gives a reason."""
    if kr_reason(fa_relearned=fa_relearned, fa_unlearned=fa_unlearned, fa_finetuned=fa_finetuned,
                 fa_finetuned_relearned=fa_finetuned_relearned, min_gap=min_gap) is not None:
        return None
    r = retention(fa_finetuned, fa_finetuned_relearned)
    return (float(fa_relearned) / r - float(fa_unlearned)) / (float(fa_finetuned) - float(fa_unlearned))


@metric("kr_vs_oracle")
def kr_vs_oracle(*, fa_oracle, fa_oracle_relearned, **fa) -> float | None:
    """KR_vs_oracle = KR - (FA_oracle_relearned - FA_oracle) / (FA_finetuned - FA_unlearned); None
    where KR is, or without the oracle's two FAs. `fa`: `kr_relearn`'s arguments."""
    kr = kr_relearn(**fa)
    if kr is None or fa_oracle is None or fa_oracle_relearned is None:
        return None
    gain = float(fa_oracle_relearned) - float(fa_oracle)
    return kr - gain / (float(fa["fa_finetuned"]) - float(fa["fa_unlearned"]))


def kr_summary(*, fa_oracle=None, fa_oracle_relearned=None, **fa) -> dict:
    """{kr, kr_vs_oracle, kr_uncorrected, retention, kr_reason, kr_vs_oracle_reason}: the values
    and, where one is null, why (JSON-safe; reasons are None when the value is defined).
    `kr_uncorrected` is KR with r = 1, for comparison."""
    reason = kr_reason(**fa)
    kr = kr_relearn(**fa)
    vs = kr_vs_oracle(fa_oracle=fa_oracle, fa_oracle_relearned=fa_oracle_relearned, **fa)
    vs_reason = reason
    if vs_reason is None and vs is None:
        vs_reason = "no oracle for this forget set (FA_oracle / FA_oracle_relearned missing)"
    raw = None
    if kr is not None:
        raw = (float(fa["fa_relearned"]) - float(fa["fa_unlearned"])) / (float(fa["fa_finetuned"]) - float(fa["fa_unlearned"]))
    return {"kr": kr, "kr_vs_oracle": vs, "kr_uncorrected": raw,
            "retention": retention(fa["fa_finetuned"], fa["fa_finetuned_relearned"]),
            "kr_reason": reason, "kr_vs_oracle_reason": vs_reason}
