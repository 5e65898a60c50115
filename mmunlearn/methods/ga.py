"""GA (gradient ascent): L = -NLL_f."""
from mmunlearn.methods.base import Method, nll_of, register


@register
class GradientAscent(Method):
    name = "ga"

    def loss(self, ctx, forget, retain):
        return -nll_of(ctx.model, forget)
