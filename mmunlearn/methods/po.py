"""PO (preference optimisation toward refusals): L = NLL(forget question -> refusal) + NLL_r.

Refusals come from `refusals.txt`, a set written for this repository.
"""
from pathlib import Path

from mmunlearn.methods.base import Method, nll_of, register

REFUSALS = [line.strip() for line in (Path(__file__).parent / "refusals.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]


@register
class RefusalPreference(Method):
    name = "po"

    def forget_answers(self, rows, pools, rng):
        return [REFUSALS[int(rng.integers(len(REFUSALS)))] for _ in rows]

    def loss(self, ctx, forget, retain):
        return nll_of(ctx.model, forget) + nll_of(ctx.model, retain)
