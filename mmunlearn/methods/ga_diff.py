"""GA-Diff (gradient difference): L = -NLL_f + gamma * NLL_r."""
from mmunlearn.methods.base import Method, nll_of, register


@register
class GradientDifference(Method):
    name = "ga_diff"

    def loss(self, ctx, forget, retain):
        return -nll_of(ctx.model, forget) + float(self.cfg["gamma"]) * nll_of(ctx.model, retain)
