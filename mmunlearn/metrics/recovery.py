"""Knowledge recoverability (KR) by relearning, and its oracle control.

Every term is read off per-row correctness (`metrics.rows.row_correct`) on the same test rows
(the forget rows not relearned on, once per cross-fitting fold), after the same relearning (folds,
steps, seed). For one model, with `finetuned`, `before` and `after` the fine-tuned model's, the
model's own and its relearned correctness on those rows:

- the *forgotten* rows are those the fine-tuned model answers and `before` does not;
- KR = the share of the forgotten rows that `after` answers again: the recovered share of what
  unlearning removed. It is in [0, 1] by construction: 0 = nothing came back, 1 = all of it.
- KR_vs_oracle = KR - the same share for the oracle (retrained without the forget set), on the
  rows it does not answer although the fine-tuned model does: recovery beyond what the same steps
  teach a model that never knew these facts. ~0 = no hidden knowledge; in [-1, 1].
- kr_net = (FA_relearned - FA_unlearned) / (FA_finetuned - FA_unlearned), the aggregate ratio,
  stays beside KR. It also counts the rows the relearning *erases* (k LoRA steps on some facts
  disturb the others), so a model that still knows many facts can score below 0 although nothing
  was hidden or recovered (-0.36 on MANU `fiu` at scale small); `relearn_loss` is that damage:
  the share of the rows the model answered before the relearning that it answers no longer.

Both are null, with a reason, when what can be recovered is below `metrics.kr_min_gap`: the gap
FA_finetuned - FA_unlearned (a near-zero gap makes KR the fate of a handful of rows, and made the
aggregate ratio -7.0 with a gap of 0.03).
"""
from __future__ import annotations

import numpy as np

from mmunlearn.metrics.mia import accuracy
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


def recovered(finetuned, before, after) -> float | None:
    """Share of the forgotten rows (`finetuned` correct, `before` not) that `after` answers; None
    when no row was forgotten. The three are bool arrays over the same rows."""
    ft, b, a = (np.asarray(x, dtype=bool).ravel() for x in (finetuned, before, after))
    forgotten = ft & ~b
    return float(a[forgotten].mean()) if forgotten.any() else None


def _reason(finetuned, unlearned, relearned, min_gap: float) -> str | None:
    reason = kr_gap_reason(accuracy(unlearned), accuracy(finetuned), min_gap)
    if reason is None and relearned is None:
        reason = "no relearned correctness"
    return reason


@metric("kr_relearn")
def kr_relearn(*, finetuned, unlearned, relearned, min_gap: float) -> float | None:
    """KR = `recovered`(finetuned, unlearned, relearned), over per-row correctness; None where the
    gap FA_finetuned - FA_unlearned is below `min_gap` (`kr_gap_reason`)."""
    if _reason(finetuned, unlearned, relearned, min_gap) is not None:
        return None
    return recovered(finetuned, unlearned, relearned)


@metric("kr_vs_oracle")
def kr_vs_oracle(*, oracle_recovery, **rows) -> float | None:
    """KR_vs_oracle = KR - `oracle_recovery` (the oracle's `recovered` after the same relearning);
    None where KR is, or without the oracle's. `rows`: `kr_relearn`'s arguments."""
    kr = kr_relearn(**rows)
    if kr is None or oracle_recovery is None:
        return None
    return kr - float(oracle_recovery)


def kr_net(*, finetuned, unlearned, relearned) -> float | None:
    """(FA_relearned - FA_unlearned) / (FA_finetuned - FA_unlearned); None with a gap <= 0."""
    ft, un, re = (accuracy(x) for x in (finetuned, unlearned, relearned))
    if None in (ft, un, re) or ft - un <= 0:
        return None
    return (re - un) / (ft - un)


def relearn_loss(before, after) -> float | None:
    """Share of the rows `before` answers that `after` does not: what the relearning erases."""
    b, a = (np.asarray(x, dtype=bool).ravel() for x in (before, after))
    return float((~a[b]).mean()) if b.any() else None


def kr_summary(*, finetuned, unlearned, relearned, min_gap: float, oracle_recovery=None) -> dict:
    """{kr, kr_vs_oracle, kr_net, relearn_loss, kr_reason, kr_vs_oracle_reason}: the values and,
    where one is null, why (reasons are None when the value is defined)."""
    rows = {"finetuned": finetuned, "unlearned": unlearned, "relearned": relearned}
    reason = _reason(**rows, min_gap=min_gap)
    vs = kr_vs_oracle(oracle_recovery=oracle_recovery, **rows, min_gap=min_gap)
    vs_reason = reason
    if vs_reason is None and vs is None:
        vs_reason = "no oracle control for this forget set (oracle_recovery missing)"
    defined = reason is None
    return {"kr": kr_relearn(**rows, min_gap=min_gap), "kr_vs_oracle": vs,
            "kr_net": kr_net(**rows) if defined else None,
            "relearn_loss": relearn_loss(unlearned, relearned) if defined else None,
            "kr_reason": reason, "kr_vs_oracle_reason": vs_reason}
