"""GA-Diff (gradient difference): L = -NLL_f + gamma * NLL_r."""
from dataclasses import dataclass

from mmunlearn.methods.base import GradientSteps, Method, hyper, nll_of, register
from mmunlearn.params import nonnegative


@register
class GradientDifference(Method):
    name = "ga_diff"

    @dataclass(frozen=True)
    class Hyper(GradientSteps):
        gamma: float = hyper(nonnegative)   # weight of the retain NLL

    def loss(self, ctx, forget, retain):
        return -nll_of(ctx.model, forget) + self.hp.gamma * nll_of(ctx.model, retain)
