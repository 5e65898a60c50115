"""NPO-Diff: L = NPO + alpha * NLL_r."""
from mmunlearn.methods.base import Method, nll_of, register
from mmunlearn.methods.npo import npo_term


@register
class NegativePreferenceDifference(Method):
    name = "npo_diff"
    uses_reference = True

    def loss(self, ctx, forget, retain):
        return npo_term(ctx, forget, float(self.cfg["beta"])) + float(self.cfg["alpha"]) * nll_of(ctx.model, retain)
