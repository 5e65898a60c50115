"""NPO: L = -(2/beta) mean_i log sigmoid(-beta [log pi_theta(y_i|x_i) - log pi_ref(y_i|x_i)]).

log pi(y|x) is the *sum* of answer-token log-probabilities of each sequence (not a batch-mean
NLL); ref = the frozen fine-tuned model.
"""
from dataclasses import dataclass

from mmunlearn.methods import losses
from mmunlearn.methods.base import GradientSteps, Method, hyper, register
from mmunlearn.params import nonnegative


@register
class NegativePreference(Method):
    name = "npo"
    uses_reference = True

    @dataclass(frozen=True)
    class Hyper(GradientSteps):
        beta: float = hyper(nonnegative)   # inverse temperature of the NPO term

    def loss(self, ctx, forget, retain):
        return losses.npo_term(ctx, forget, self.hp.beta)
