"""Fine-tune on retain: L = NLL_r only (forgetting by neglect, the cheap baseline)."""
from mmunlearn.methods.base import Method, nll_of, register


@register
class FinetuneRetain(Method):
    name = "finetune_retain"

    def loss(self, ctx, forget, retain):
        return nll_of(ctx.model, retain)
