"""MANU: prune the neurons most specific to the forget set; no gradient step.

For every MLP neuron on the model's path (input channels of the MLP output projections `fc2` /
`down_proj` of the vision encoder and of the language model, located with `arch.model_parts`:
LLaVA's vision_tower and language_model, BLIP-2's vision_model and language_model; the projector,
BLIP-2's Q-Former included, is left alone; vision layers after LLaVA's `vision_feature_layer`
feed nothing and are no candidates), importance statistics on forget and on retain activations
over real tokens (padding excluded): mean |a|, activation frequency (share of tokens with a > 0),
std and rms. Score
S = sum_m w_m (I_m^f / (I_m^r + eps) - 1); the top-k % neurons by S are zeroed (their column of
the effective output weight), cumulatively over continual tasks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from mmunlearn.methods.base import Hyperparameters, Method, hyper, register, steps_check
from mmunlearn.models.arch import in_part, model_parts, named_modules, on_model_path, require_parts
from mmunlearn.models.vlm import install_pruning
from mmunlearn.params import ParamError, nonnegative, ratio

STATS = ("mean_abs", "frequency", "std", "rms")
PRUNABLE = ("fc2", "down_proj")


def mlp_outputs(model) -> dict[str, torch.nn.Module]:
    """The MLP output projections of the vision and language parts whose input channels are the
    neurons, by name in the underlying transformers model (the same with or without a peft
    wrapper), on the model's path only (`arch.on_model_path`: no pruning budget is spent on a vision
    layer whose output nothing reads); a model without both parts is refused with a clear error."""
    parts = require_parts(model, "manu", ("vision", "language"))
    roots = parts["vision"] + parts["language"]
    return {n: m for n, m in named_modules(model).items()
            if n.rsplit(".", 1)[-1] in PRUNABLE and hasattr(m, "in_features") and in_part(n, roots)
            and on_model_path(model, n)}


@torch.no_grad()
def neuron_stats(model, batches, modules: dict[str, torch.nn.Module]) -> dict[str, dict[str, torch.Tensor]]:
    """Per module: {stat: [n_neurons]} over the real tokens of `batches`: in the language model
    the positions of the batch's attention mask (padding never counts, so the statistics do not
    depend on how rows are padded), in the vision part every position (all image patches are
    real)."""
    from mmunlearn.models.scoring import model_inputs

    language = {n for n in modules if in_part(n, model_parts(model)["language"])}
    acc = {n: {"n": 0, "abs": 0, "pos": 0, "sum": 0, "sq": 0} for n in modules}
    batch_mask: dict[str, torch.Tensor] = {}
    hooks = []
    for name, mod in modules.items():
        def hook(_m, inputs, name=name):
            a = real_tokens(name, inputs[0].detach().float(), batch_mask["valid"] if name in language else None)
            s = acc[name]
            s["n"] += a.shape[0]
            s["abs"] += a.abs().sum(0)
            s["pos"] += (a > 0).float().sum(0)
            s["sum"] += a.sum(0)
            s["sq"] += (a * a).sum(0)
        hooks.append(mod.register_forward_pre_hook(hook))
    try:
        for batch in batches:
            batch_mask["valid"] = batch["attention_mask"].bool()
            model(**model_inputs(batch, model))
    finally:
        for h in hooks:
            h.remove()
    return {name: summarise(s) for name, s in acc.items()}


def real_tokens(name: str, a: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """[tokens, neurons]: the activations at the `valid` positions ([batch, seq]), or all of them."""
    if valid is None:
        return a.reshape(-1, a.shape[-1])
    if tuple(a.shape[:-1]) != tuple(valid.shape):
        raise ValueError(f"manu: {name} sees activations of shape {tuple(a.shape)}, not one per token of the "
                         f"batch's attention mask {tuple(valid.shape)}")
    return a[valid.to(a.device)]


def summarise(s: dict) -> dict[str, torch.Tensor]:
    """mean |a|, frequency of a > 0, std and rms from the running sums of one module."""
    n = max(1, s["n"])
    mean, meansq = s["sum"] / n, s["sq"] / n
    return {"mean_abs": s["abs"] / n, "frequency": s["pos"] / n,
            "std": (meansq - mean ** 2).clamp(min=0).sqrt(), "rms": meansq.sqrt()}


def importance_scores(forget: dict, retain: dict, weights, eps: float) -> dict[str, torch.Tensor]:
    """S = sum_m w_m (I_m^f / (I_m^r + eps) - 1) per neuron."""
    return {name: sum(float(w) * (forget[name][m] / (retain[name][m] + eps) - 1) for w, m in zip(weights, STATS))
            for name in forget}


def select_top(scores: dict[str, torch.Tensor], k: float, exclude: dict[str, set[int]]) -> dict[str, list[int]]:
    """The top-k fraction of all neurons by score (ties by module order, then index), skipping
    neurons already pruned."""
    entries = [(float(v), name, i) for name, s in scores.items() for i, v in enumerate(s.tolist())]
    total = len(entries)
    entries = [e for e in entries if e[2] not in exclude.get(e[1], set())]
    order = sorted(range(len(entries)), key=lambda j: (-entries[j][0], j))
    picked: dict[str, list[int]] = {}
    for j in order[:max(1, int(round(k * total)))]:
        picked.setdefault(entries[j][1], []).append(entries[j][2])
    return {n: sorted(v) for n, v in picked.items()}


def four_weights(key: str, value) -> list[float]:
    """The weights of the four statistics (mean |a|, frequency, std, rms), each >= 0."""
    if not isinstance(value, list) or len(value) != 4:
        raise ParamError(key, value, "must list 4 weights (mean |a|, frequency, std, rms)")
    return [nonnegative(f"{key}[{i}]", w) for i, w in enumerate(value)]


@register
class MANU(Method):
    name = "manu"

    @dataclass(frozen=True)
    class Hyper(Hyperparameters):
        top_k: float = hyper(ratio)               # share of candidate neurons pruned per task
        weights: list = hyper(four_weights)       # weights of the four statistics in the score
        eps: float = hyper(nonnegative)           # I_f / (I_r + eps)
        batches: int = hyper(steps_check)         # forget / retain batches of activation statistics

    def run_task(self, ctx) -> dict[str, float]:
        modules = mlp_outputs(ctx.model)
        n_batches = self.hp.batches
        # whole batches: every rank of a data-parallel launch scores the same rows, prunes the same
        f = neuron_stats(ctx.model, [ctx.forget_batches(whole=True) for _ in range(n_batches)], modules)
        r = neuron_stats(ctx.model, [ctx.retain_batches(whole=True) for _ in range(n_batches)], modules)
        scores = importance_scores(f, r, self.hp.weights, self.hp.eps)
        pruned = ctx.state.setdefault("pruned", {})
        new = select_top(scores, self.hp.top_k, {k: set(v) for k, v in pruned.items()})
        for h in ctx.state.pop("hooks", []):
            h.remove()
        for name, idx in new.items():
            pruned[name] = sorted(set(pruned.get(name, [])) | set(idx))
        ctx.state["hooks"] = install_pruning(ctx.model, pruned)
        return {"pruned": float(sum(len(v) for v in new.values()))}
