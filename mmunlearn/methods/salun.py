"""SalUn: saliency mask = top-k % of trainable weights by |grad NLL_f| over the task's whole forget
set (once per task); then random-label training on forget + NLL_r, updating masked weights only.

The mask lives in `ctx.state["grad_mask"]`, so `Method.masked_update` applies it: weights outside it
stay bit-identical through the task whatever the (continual, persistent) optimizer's state.
"""
from dataclasses import dataclass

import torch

from mmunlearn.methods.base import (GradientSteps, Method, hyper, nll_of,
                                    random_wrong_answers, register, trainable)
from mmunlearn.params import ratio
from mmunlearn.models.encode import IGNORE


def top_k_mask(scores: dict[str, torch.Tensor], k: float) -> dict[str, torch.Tensor]:
    """True for exactly the top-k fraction of all entries by score (at least one; one global
    ranking, ties broken by parameter order, then index), else False. Exactly: a threshold
    `>= t` would take every tied entry, e.g. all zero-gradient weights when k is large."""
    flat = torch.cat([s.flatten() for s in scores.values()])
    n = max(1, int(round(k * flat.numel())))
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    chosen[torch.argsort(flat, descending=True, stable=True)[:n]] = True
    out, start = {}, 0
    for name, s in scores.items():
        out[name] = chosen[start:start + s.numel()].view(s.shape).to(s.device)
        start += s.numel()
    return out


def forget_saliency(ctx) -> dict[str, torch.Tensor]:
    """|grad NLL_f| per trainable weight, NLL_f = the mean token CE over every answer token of the
    task's whole forget set (true answers): batch means weighted by their share of the answer
    tokens, summed through backward, equal the gradient of one batch holding every row. Weights
    off the forward path get no gradient: saliency 0."""
    params = trainable(ctx.model)
    batches = ctx.forget_set()
    tokens = [int((b["labels"] != IGNORE).sum()) for b in batches]
    ctx.model.zero_grad(set_to_none=True)
    for batch, n in zip(batches, tokens):
        ctx.accelerator.backward(nll_of(ctx.model, batch) * (n / max(1, sum(tokens))))
    saliency = {n: p.grad.detach().abs() if p.grad is not None else torch.zeros_like(p)
                for n, p in params.items()}
    ctx.model.zero_grad(set_to_none=True)
    return saliency


@register
class SaliencyUnlearning(Method):
    name = "salun"

    @dataclass(frozen=True)
    class Hyper(GradientSteps):
        top_k: float = hyper(ratio)   # share of weights in the saliency mask

    def forget_answers(self, rows, pools, rng):
        return random_wrong_answers(rows, pools, rng)

    def begin_task(self, ctx):
        if ctx.forget_set is None:
            raise ValueError("salun: the context has no forget_set (the task's whole forget set)")
        ctx.state["grad_mask"] = top_k_mask(forget_saliency(ctx), self.hp.top_k)

    def loss(self, ctx, forget, retain):
        return nll_of(ctx.model, forget) + nll_of(ctx.model, retain)
