"""NPO: L = -(2/beta) mean_i log sigmoid(-beta [log pi_theta(y_i|x_i) - log pi_ref(y_i|x_i)]).

log pi(y|x) is the *sum* of answer-token log-probabilities of each sequence (not a batch-mean
NLL); ref = the frozen fine-tuned model.
"""
import torch

from mmunlearn.methods import losses
from mmunlearn.methods.base import Method, register, seq_logprob_of


def npo_term(ctx, forget, beta: float) -> torch.Tensor:
    with torch.no_grad():
        ref = seq_logprob_of(ctx.ref, forget)
    return losses.npo(seq_logprob_of(ctx.model, forget), ref, beta)


@register
class NegativePreference(Method):
    name = "npo"
    uses_reference = True

    def loss(self, ctx, forget, retain):
        return npo_term(ctx, forget, float(self.cfg["beta"]))
