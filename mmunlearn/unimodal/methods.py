"""Classifier unlearning losses for the CIFAR-10 branch: SPEC section 6 with cross-entropy as NLL.

A classifier's prediction is a one-token answer, so the formulas of `mmunlearn.methods.losses`
apply unchanged: the log-probability of the true label is a [B, 1] "token" log-prob with an
all-ones mask, `losses.nll` of it is the mean cross-entropy, its per-row sum is the sequence
log-prob NPO uses, and `losses.kl_ref_theta` over [B, 1, C] is the KL of the class distributions.

Each method is one loss `fn(ctx, x_forget, y_forget, x_retain, y_retain) -> scalar tensor`,
registered by name in `CLASSIFIER_METHODS`; `ref` is the frozen original model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from mmunlearn.methods import losses

Tensor = torch.Tensor
LossFn = Callable[["ClassifierContext", Tensor, Tensor, Tensor, Tensor], Tensor]
CLASSIFIER_METHODS: dict[str, LossFn] = {}


@dataclass
class ClassifierContext:
    """What a classifier loss sees at one step."""

    model: torch.nn.Module          # trainable copy of the original model
    ref: torch.nn.Module            # the original model, frozen (eval mode, no grad)
    cfg: dict                       # the `unlearn` block: gamma, beta, alpha, weight, ...
    num_classes: int
    generator: torch.Generator      # random labels


def register(name: str) -> Callable[[LossFn], LossFn]:
    def add(fn: LossFn) -> LossFn:
        if name in CLASSIFIER_METHODS:
            raise ValueError(f"classifier method {name!r} is already registered")
        CLASSIFIER_METHODS[name] = fn
        return fn

    return add


def label_logprobs(logits: Tensor, y: Tensor) -> Tensor:
    """[B, 1] log p(y_i | x_i): the 1-token answer log-probs of a batch."""
    return torch.log_softmax(logits, -1).gather(-1, y.view(-1, 1))


def nll(model: torch.nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy = `losses.nll` over 1-token answers."""
    lp = label_logprobs(model(x), y)
    return losses.nll(lp, torch.ones_like(lp))


def npo_term(ctx: ClassifierContext, x: Tensor, y: Tensor) -> Tensor:
    """`losses.npo` on per-sample label log-probs (a 1-token sequence's summed log-prob)."""
    with torch.no_grad():
        ref = label_logprobs(ctx.ref(x), y).sum(-1)
    return losses.npo(label_logprobs(ctx.model(x), y).sum(-1), ref, float(ctx.cfg["beta"]))


@register("ga")
def ga(ctx, xf, yf, xr, yr):
    """GA: -NLL_f."""
    return -nll(ctx.model, xf, yf)


@register("ga_diff")
def ga_diff(ctx, xf, yf, xr, yr):
    """GA-Diff: -NLL_f + gamma NLL_r."""
    return -nll(ctx.model, xf, yf) + float(ctx.cfg["gamma"]) * nll(ctx.model, xr, yr)


@register("kl")
def kl(ctx, xf, yf, xr, yr):
    """KL-Min: -NLL_f + weight KL(p_ref || p_theta) on retain."""
    with torch.no_grad():
        logp_ref = torch.log_softmax(ctx.ref(xr), -1).unsqueeze(1)
    logp = torch.log_softmax(ctx.model(xr), -1).unsqueeze(1)
    mask = torch.ones(logp.shape[:2], dtype=logp.dtype)
    return -nll(ctx.model, xf, yf) + float(ctx.cfg["weight"]) * losses.kl_ref_theta(logp_ref, logp, mask)


@register("npo")
def npo(ctx, xf, yf, xr, yr):
    """NPO: -(2/beta) mean log sigmoid(-beta (log p_theta(y|x) - log p_ref(y|x))) on forget."""
    return npo_term(ctx, xf, yf)


@register("npo_diff")
def npo_diff(ctx, xf, yf, xr, yr):
    """NPO-Diff: NPO + alpha NLL_r."""
    return npo_term(ctx, xf, yf) + float(ctx.cfg["alpha"]) * nll(ctx.model, xr, yr)


@register("random_labels")
def random_labels(ctx, xf, yf, xr, yr):
    """NLL of the forget images paired with a uniformly drawn wrong class (fresh each step) + NLL_r."""
    shift = torch.randint(1, ctx.num_classes, yf.shape, generator=ctx.generator)
    wrong = (yf + shift) % ctx.num_classes
    return nll(ctx.model, xf, wrong) + nll(ctx.model, xr, yr)


@register("finetune_retain")
def finetune_retain(ctx, xf, yf, xr, yr):
    """Fine-tune on retain only: NLL_r."""
    return nll(ctx.model, xr, yr)
