"""SalUn: saliency mask = top-k % of trainable weights by |grad NLL_f| (once per task); then
random-label training on forget + NLL_r, updating masked weights only."""
import torch

from mmunlearn.methods.base import Method, nll_of, random_wrong_answers, register, trainable


def top_k_mask(scores: dict[str, torch.Tensor], k: float) -> dict[str, torch.Tensor]:
    """1 for the top-k fraction of all entries by score (global threshold), else 0."""
    flat = torch.cat([s.flatten() for s in scores.values()])
    n = max(1, int(round(k * flat.numel())))
    threshold = flat.topk(n).values.min()
    return {name: (s >= threshold).float() for name, s in scores.items()}


@register
class SaliencyUnlearning(Method):
    name = "salun"

    def forget_answers(self, rows, pools, rng):
        return random_wrong_answers(rows, pools, rng)

    def begin_task(self, ctx):
        params = trainable(ctx.model)
        ctx.model.zero_grad(set_to_none=True)
        batch = ctx.state["true_forget_batch"]
        ctx.accelerator.backward(nll_of(ctx.model, batch))
        saliency = {n: p.grad.detach().abs() if p.grad is not None else torch.zeros_like(p)
                    for n, p in params.items()}  # weights outside the forward path get no gradient
        ctx.state["grad_mask"] = top_k_mask(saliency, float(self.cfg["top_k"]))
        ctx.model.zero_grad(set_to_none=True)

    def loss(self, ctx, forget, retain):
        return nll_of(ctx.model, forget) + nll_of(ctx.model, retain)
