"""KL-Min: L = -NLL_f + weight * KL(p_ref || p_theta) on retain; ref = the frozen fine-tuned model."""
from dataclasses import dataclass

import torch

from mmunlearn.methods import losses
from mmunlearn.methods.base import GradientSteps, Method, hyper, nll_of, register
from mmunlearn.params import nonnegative
from mmunlearn.models.scoring import forward_answers


@register
class KLMinimisation(Method):
    name = "kl"
    uses_reference = True

    @dataclass(frozen=True)
    class Hyper(GradientSteps):
        weight: float = hyper(nonnegative)   # weight of KL(p_ref || p_theta) on retain

    def loss(self, ctx, forget, retain):
        _, logits, _, mask = forward_answers(ctx.model, retain)
        with torch.no_grad():
            _, ref_logits, _, _ = forward_answers(ctx.ref, retain)
        kl = losses.kl_ref_theta(torch.log_softmax(ref_logits, -1), torch.log_softmax(logits, -1), mask)
        return -nll_of(ctx.model, forget) + self.hp.weight * kl
