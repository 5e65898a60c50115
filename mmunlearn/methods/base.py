"""Method interface: a method turns (forget batch, retain batch) into one loss per step.

Hooks, all optional: `forget_answers` (targets that replace the true forget answers: refusals,
random labels), `begin_task` (masks computed once per task), `step` (methods with their own
update rule) and `run_task` (methods with no gradient step at all).

Gradient steps compute their loss through `Context.train_loss`: under a data-parallel launch that
is one forward of the DDP-wrapped `StepLoss`, so the backward that follows averages the gradients
over the ranks; statistics over whole sets (Fisher, saliency, MANU's activations), the same rows on
every rank, run on the plain model and stay local.

Masked methods (SalUn, MMUnlearner's ascent steps) put their mask in `ctx.state["grad_mask"]` and
update through `Method.masked_update`, the one place where "weights outside the mask do not change"
is enforced: gradients outside it are zeroed, and after the optimizer step the weights outside it
are restored bit for bit, whatever state the optimizer carries (the runner keeps one AdamW over
all continual tasks, whose momentum would otherwise keep moving weights with zero gradient).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import numpy as np
import torch

from mmunlearn import params as checks
from mmunlearn.methods import losses
from mmunlearn.models.scoring import forward_answers, token_logprobs

REGISTRY: dict[str, type["Method"]] = {}


def hyper(check) -> Any:
    """A hyperparameter field: `check(key, value)` is one of `mmunlearn.params`' value checks,
    applied to the value of every scale before the method runs. No default: params.yaml holds
    every value."""
    return field(metadata={"check": check})


def steps_check(key: str, value: Any) -> int:
    return checks.integer(key, value, lo=1)


@dataclass(frozen=True)
class Hyperparameters:
    """A method's block `unlearn.<name>`: a subclass per method adds its fields (`hyper`)."""

    @classmethod
    def from_block(cls, block: Any, key: str, scale: str | None = None) -> "Hyperparameters":
        """Checked values from a params block; a value written per scale (`{smoke: .., small: ..,
        full: ..}`) is checked at every scale and taken at `scale`. Unknown or missing keys and
        bad values raise `ParamError` naming `key.<field>`."""
        if not isinstance(block, Mapping):
            raise checks.ParamError(key, block, "must be a mapping")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        checks.keys(key, block, list(fields))
        values = {}
        for name, f in fields.items():
            v = block[name]
            checks.per_scale(f"{key}.{name}", v, f.metadata["check"])
            values[name] = v[scale] if scale is not None and checks.is_per_scale(v) else v
        return cls(**values)


@dataclass(frozen=True)
class GradientSteps(Hyperparameters):
    """What every gradient method has: the learning rate and the steps per task."""

    lr: float = hyper(checks.nonnegative)
    steps: int = hyper(steps_check)


def register(cls: type["Method"]) -> type["Method"]:
    REGISTRY[cls.name] = cls
    return cls


@dataclass
class Context:
    """What a method sees while unlearning one task."""

    model: Any                      # trainable (peft) model
    ref: Any | None                 # frozen fine-tuned model, for methods that need it
    optimizer: torch.optim.Optimizer
    accelerator: Any
    rng: np.random.Generator
    # callables (methods.runner.Sampler): the next batch of this process (its shard under a
    # data-parallel launch; `whole=True`: the same batch on every rank)
    forget_batches: Any             # callable(n=batch size, whole=False) -> next forget batch
    retain_batches: Any             # callable(n=batch size, whole=False) -> next retain batch (of n rows)
    forget_rows: list[dict] = field(default_factory=list)
    # callable -> the task's whole forget set with its true answers, as batches in order (masks
    # computed over the full set); None where a caller has none to give
    forget_set: Any = None
    retain_rows: list[dict] = field(default_factory=list)
    state: dict = field(default_factory=dict)   # per-task method state (masks, ...)
    # callable(loss_fn, *args) -> loss: the prepared `StepLoss` (None: call loss_fn directly)
    step_loss: Any = None

    def train_loss(self, fn, *args) -> torch.Tensor:
        """`fn(*args)`, the loss of one gradient step, through `step_loss` where the runner set it."""
        return fn(*args) if self.step_loss is None else self.step_loss(fn, *args)


class StepLoss(torch.nn.Module):
    """The trainable model with a loss function as its forward: what the runner wraps in DDP
    (`accelerator.prepare`), so a gradient step is one DDP forward however many passes its loss
    makes. DDP finds the weights a step uses from the output of its last forward, so a DDP-wrapped
    model run twice before one backward (forget, then retain) fails when the first pass used a
    weight the second did not (LoRA on the vision tower, then a batch without images)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, loss_fn, *args) -> torch.Tensor:
        return loss_fn(*args)


def nll_of(model, batch: dict) -> torch.Tensor:
    _, logits, targets, mask = forward_answers(model, batch)
    return losses.nll(token_logprobs(logits, targets, mask), mask)


def seq_logprob_of(model, batch: dict) -> torch.Tensor:
    _, logits, targets, mask = forward_answers(model, batch)
    return token_logprobs(logits, targets, mask).sum(-1)


def trainable(model) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


class Method:
    name: ClassVar[str]
    uses_reference: ClassVar[bool] = False
    Hyper: ClassVar[type[Hyperparameters]] = GradientSteps

    def __init__(self, hp: Hyperparameters | Mapping):
        self.hp = hp if isinstance(hp, Hyperparameters) else self.Hyper.from_block(hp, f"unlearn.{self.name}")

    @classmethod
    def configure(cls, params: dict) -> "Method":
        """The method with its block of `params` (`unlearn.<name>`) checked and resolved at
        `params["scale"]`."""
        return cls(cls.Hyper.from_block(params["unlearn"].get(cls.name), f"unlearn.{cls.name}", params["scale"]))

    def forget_answers(self, rows: list[dict], pools: dict, rng: np.random.Generator) -> list[str] | None:
        return None

    def begin_task(self, ctx: Context) -> None:
        pass

    def loss(self, ctx: Context, forget: dict, retain: dict) -> torch.Tensor:
        raise NotImplementedError

    def step(self, ctx: Context) -> dict[str, float]:
        """One optimisation step; returns the logged losses."""
        forget, retain = ctx.forget_batches(), ctx.retain_batches()
        ctx.optimizer.zero_grad(set_to_none=True)
        loss = ctx.train_loss(self.loss, ctx, forget, retain)
        ctx.accelerator.backward(loss)
        self.masked_update(ctx)
        return {"loss": float(loss.detach())}

    def mask_gradients(self, ctx: Context, mask: dict[str, torch.Tensor]) -> None:
        """Zero the gradients outside `mask` ({name: bool tensor}; a trainable tensor it does not
        name is outside it whole), so the optimizer's moments gather only in-mask gradients."""
        for n, p in trainable(ctx.model).items():
            if p.grad is not None:
                m = mask.get(n)
                if m is None:
                    p.grad.zero_()
                else:
                    p.grad.masked_fill_(~m, 0)

    def masked_update(self, ctx: Context) -> None:
        """`ctx.optimizer.step()` that changes only the weights inside the task's mask
        (`ctx.state["grad_mask"]`; no mask = a plain step). Zeroed gradients are not enough: Adam's
        moments from earlier steps and tasks, or weight decay, move weights whose gradient is zero.
        So the weights outside the mask are copied before the step and put back after it: they
        stay bit-identical by construction, for any optimizer."""
        mask = ctx.state.get("grad_mask")
        if not mask:
            ctx.optimizer.step()
            return
        self.mask_gradients(ctx, mask)
        params = trainable(ctx.model)
        kept = {n: p.detach().clone() for n, p in params.items()}
        ctx.optimizer.step()
        with torch.no_grad():
            for n, p in params.items():
                m = mask.get(n)
                p.copy_(kept[n] if m is None else torch.where(m, p, kept[n]))

    run_task = None  # a method without gradient steps sets this to a callable(ctx, method)

    def unlearn_task(self, ctx: Context, steps: int) -> None:
        """One forget task: `begin_task`, then `run_task` or `steps` steps."""
        self.begin_task(ctx)
        if self.run_task is not None:
            self.run_task(ctx)
        else:
            for _ in range(steps):
                self.step(ctx)


def random_wrong_answers(rows: list[dict], pools: dict, rng: np.random.Generator) -> list[str]:
    """For each row, a value of the same field from another profile that the scorer can never
    take for the true answer (`metrics.rows.wrong_values`: neither contains the other after
    normalisation, so `A+` is a wrong label for `A-` but `Smith, J.` is not one for `smith j`).
    A field with no such value is a ValueError naming it."""
    from mmunlearn.metrics.rows import wrong_values

    out = []
    for r in rows:
        key = (r["domain"], r["field"])
        pool = wrong_values(r["answer"], pools[key], f"random label of {key[0]}.{key[1]}")
        out.append(pool[int(rng.integers(len(pool)))])
    return out
