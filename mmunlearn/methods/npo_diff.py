"""NPO-Diff: L = NPO + alpha * NLL_r."""
from dataclasses import dataclass

from mmunlearn.methods import losses
from mmunlearn.methods.base import GradientSteps, Method, hyper, nll_of, register
from mmunlearn.params import nonnegative


@register
class NegativePreferenceDifference(Method):
    name = "npo_diff"
    uses_reference = True

    @dataclass(frozen=True)
    class Hyper(GradientSteps):
        beta: float = hyper(nonnegative)    # inverse temperature of the NPO term
        alpha: float = hyper(nonnegative)   # weight of the retain NLL

    def loss(self, ctx, forget, retain):
        return losses.npo_term(ctx, forget, self.hp.beta) + self.hp.alpha * nll_of(ctx.model, retain)
