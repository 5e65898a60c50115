"""Random labels: L = NLL(forget question -> a wrong answer of the same field) + NLL_r."""
from mmunlearn.methods.base import Method, nll_of, random_wrong_answers, register


@register
class RandomLabels(Method):
    name = "random_labels"

    def forget_answers(self, rows, pools, rng):
        return random_wrong_answers(rows, pools, rng)

    def loss(self, ctx, forget, retain):
        return nll_of(ctx.model, forget) + nll_of(ctx.model, retain)
