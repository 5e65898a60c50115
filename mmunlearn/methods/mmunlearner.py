"""MMUnlearner: Fisher diagonals F = E[(grad NLL)^2] on the forget and preserve (retain) sets;
mask M = 1[F_f / F_p >= tau]; masked gradient-ascent steps on forget alternate with unmasked NLL
steps on retain, both through the one optimizer.

As in the authors' code (github.com/Z1zs/MMUnlearner, `baselines/MLLMU_manifold.py`; Fisher in
`data_process/SFRon.py`): only the ascent gradient is masked, the retain step updates every weight,
one AdamW serves both, and the Fisher diagonals average the squared gradients of per-batch mean
losses over the whole forget set and a preserve set. Here the preserve set is a retain sample of
the same size, in batches of the same sizes (so both diagonals have the same per-batch scale), and
the ascent steps go through `Method.masked_update`: an ascent step leaves every weight outside the
mask bit-identical, whatever Adam carries from retain steps and earlier tasks.
"""
from dataclasses import dataclass

import torch

from mmunlearn.methods.base import GradientSteps, Method, hyper, nll_of, register, trainable
from mmunlearn.params import nonnegative


def fisher_diagonal(ctx, batches: list[dict]) -> dict[str, torch.Tensor]:
    """sum_b (n_b / N) (grad NLL_b)^2 per trainable weight: the squared gradient of each batch's
    mean NLL, weighted by the batch's share N of the rows."""
    params = trainable(ctx.model)
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    total = sum(len(b["input_ids"]) for b in batches)
    for batch in batches:
        ctx.model.zero_grad(set_to_none=True)
        ctx.accelerator.backward(nll_of(ctx.model, batch))
        for n, p in params.items():
            if p.grad is not None:
                fisher[n] += p.grad.detach() ** 2 * (len(batch["input_ids"]) / total)
    ctx.model.zero_grad(set_to_none=True)
    return fisher


def fisher_mask(f_forget: dict, f_preserve: dict, tau: float, eps: float = 1e-12) -> dict[str, torch.Tensor]:
    """True where F_f / (F_p + eps) >= tau."""
    return {n: f_forget[n] / (f_preserve[n] + eps) >= tau for n in f_forget}


@register
class MMUnlearner(Method):
    name = "mmunlearner"

    @dataclass(frozen=True)
    class Hyper(GradientSteps):
        tau: float = hyper(nonnegative)   # Fisher-ratio threshold of the mask

    def begin_task(self, ctx):
        """The task's mask from the whole forget set and an equal-size retain sample."""
        if ctx.forget_set is None:
            raise ValueError("mmunlearner: the context has no forget_set (the task's whole forget set)")
        forget = ctx.forget_set()
        # whole batches, like the forget set: the same rows on every rank of a data-parallel launch
        retain = [ctx.retain_batches(len(b["input_ids"]), whole=True) for b in forget]
        ctx.state["grad_mask"] = fisher_mask(fisher_diagonal(ctx, forget), fisher_diagonal(ctx, retain),
                                             self.hp.tau)

    def step(self, ctx):
        forget_loss = self.ascent_step(ctx)
        retain_loss = self.retain_step(ctx)
        return {"loss": forget_loss + retain_loss}

    def ascent_step(self, ctx) -> float:
        """Gradient ascent on a forget batch, inside the mask only."""
        ctx.optimizer.zero_grad(set_to_none=True)
        loss = -ctx.train_loss(nll_of, ctx.model, ctx.forget_batches())
        ctx.accelerator.backward(loss)
        self.masked_update(ctx)
        return float(loss.detach())

    def retain_step(self, ctx) -> float:
        """NLL descent on a retain batch, every weight (unmasked, as in the paper's code)."""
        ctx.optimizer.zero_grad(set_to_none=True)
        loss = ctx.train_loss(nll_of, ctx.model, ctx.retain_batches())
        ctx.accelerator.backward(loss)
        ctx.optimizer.step()
        return float(loss.detach())
