"""MMUnlearner: Fisher diagonals F = E[(grad NLL)^2] on forget and preserve (retain) sets; mask
M = 1[F_f / F_p >= tau]; alternate masked gradient-ascent steps on forget with unmasked NLL steps
on retain (separate optimiser states, so unmasked weights never move in an ascent step)."""
import torch

from mmunlearn.methods.base import Method, nll_of, register, trainable


def fisher_diagonal(ctx, batches) -> dict[str, torch.Tensor]:
    params = trainable(ctx.model)
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    for batch in batches:
        ctx.model.zero_grad(set_to_none=True)
        ctx.accelerator.backward(nll_of(ctx.model, batch))
        for n, p in params.items():
            if p.grad is not None:
                fisher[n] += p.grad.detach() ** 2
    ctx.model.zero_grad(set_to_none=True)
    return {n: f / max(1, len(batches)) for n, f in fisher.items()}


def fisher_mask(f_forget: dict, f_preserve: dict, tau: float, eps: float = 1e-12) -> dict[str, torch.Tensor]:
    return {n: (f_forget[n] / (f_preserve[n] + eps) >= tau).float() for n in f_forget}


@register
class MMUnlearner(Method):
    name = "mmunlearner"

    def begin_task(self, ctx):
        ff = fisher_diagonal(ctx, [ctx.forget_batches() for _ in range(2)])
        fp = fisher_diagonal(ctx, [ctx.retain_batches() for _ in range(2)])
        ctx.state["ascent_mask"] = fisher_mask(ff, fp, float(self.cfg["tau"]))
        params = list(trainable(ctx.model).values())
        ctx.state["ascent_optimizer"] = ctx.accelerator.prepare(
            torch.optim.AdamW(params, lr=float(self.cfg["lr"]), weight_decay=0.0))

    def step(self, ctx):
        opt = ctx.state["ascent_optimizer"]
        opt.zero_grad(set_to_none=True)
        forget_loss = -nll_of(ctx.model, ctx.forget_batches())
        ctx.accelerator.backward(forget_loss)
        mask = ctx.state["ascent_mask"]
        for n, p in trainable(ctx.model).items():
            if p.grad is not None:
                p.grad.mul_(mask[n])
        opt.step()
        ctx.optimizer.zero_grad(set_to_none=True)
        retain_loss = nll_of(ctx.model, ctx.retain_batches())
        ctx.accelerator.backward(retain_loss)
        ctx.optimizer.step()
        return {"loss": float(forget_loss.detach() + retain_loss.detach())}
