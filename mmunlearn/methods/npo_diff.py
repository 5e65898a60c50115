"""NPO-Diff: L = NPO + alpha * NLL_r."""
from mmunlearn.methods import losses
from mmunlearn.methods.base import Method, nll_of, register


@register
class NegativePreferenceDifference(Method):
    name = "npo_diff"
    uses_reference = True

    def loss(self, ctx, forget, retain):
        return losses.npo_term(ctx, forget, float(self.cfg["beta"])) + float(self.cfg["alpha"]) * nll_of(ctx.model, retain)
