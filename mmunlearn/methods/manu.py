"""MANU: prune the neurons most specific to the forget set; no gradient step.

For every MLP neuron (input channels of the MLP output projections `fc2` / `down_proj` of the
vision encoder and of the language model, located with `arch.model_parts`: LLaVA's vision_tower
and language_model, BLIP-2's vision_model and language_model; the projector, BLIP-2's Q-Former
included, is left alone), importance statistics on forget and on retain activations: mean |a|,
activation frequency (share of tokens with a > 0), std and rms. Score
S = sum_m w_m (I_m^f / (I_m^r + eps) - 1); the top-k % neurons by S are zeroed (their column of
the effective output weight), cumulatively over continual tasks.
"""
from __future__ import annotations

import torch

from mmunlearn.methods.base import Method, register
from mmunlearn.models.arch import in_part, require_parts

STATS = ("mean_abs", "frequency", "std", "rms")
PRUNABLE = ("fc2", "down_proj")


PEFT_PREFIX = "base_model.model."


def mlp_outputs(model) -> dict[str, torch.nn.Module]:
    """The MLP output projections of the vision and language parts whose input channels are the
    neurons, by name in the underlying transformers model (the same with or without a peft
    wrapper); a model without both parts is refused with a clear error."""
    parts = require_parts(model, "manu", ("vision", "language"))
    roots = parts["vision"] + parts["language"]
    return {n: m for n, m in named_modules(model).items()
            if n.rsplit(".", 1)[-1] in PRUNABLE and hasattr(m, "in_features") and in_part(n, roots)}


def named_modules(model) -> dict[str, torch.nn.Module]:
    """Modules by name in the underlying transformers model (peft prefix removed)."""
    return {n.removeprefix(PEFT_PREFIX): m for n, m in model.named_modules()}


@torch.no_grad()
def neuron_stats(model, batches, modules: dict[str, torch.nn.Module]) -> dict[str, dict[str, torch.Tensor]]:
    """Per module: {stat: [n_neurons]} over all tokens of `batches`."""
    from mmunlearn.models.scoring import model_inputs

    acc = {n: {"n": 0, "abs": 0, "pos": 0, "sum": 0, "sq": 0} for n in modules}
    hooks = []
    for name, mod in modules.items():
        def hook(_m, inputs, name=name):
            a = inputs[0].detach().float().reshape(-1, inputs[0].shape[-1])
            s = acc[name]
            s["n"] += a.shape[0]
            s["abs"] += a.abs().sum(0)
            s["pos"] += (a > 0).float().sum(0)
            s["sum"] += a.sum(0)
            s["sq"] += (a * a).sum(0)
        hooks.append(mod.register_forward_pre_hook(hook))
    try:
        for batch in batches:
            model(**model_inputs(batch, model))
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for name, s in acc.items():
        n = max(1, s["n"])
        mean, meansq = s["sum"] / n, s["sq"] / n
        out[name] = {"mean_abs": s["abs"] / n, "frequency": s["pos"] / n,
                     "std": (meansq - mean ** 2).clamp(min=0).sqrt(), "rms": meansq.sqrt()}
    return out


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


def install_pruning(model, pruned: dict[str, list[int]]) -> list:
    """Zero the pruned input channels of each MLP output projection during forward passes."""
    modules = named_modules(model)
    hooks = []
    for name, idx in pruned.items():
        if not idx:
            continue
        keep = torch.ones(modules[name].in_features)
        keep[idx] = 0

        def pre(_m, inputs, keep=keep):
            return (inputs[0] * keep.to(inputs[0].dtype),) + tuple(inputs[1:])
        hooks.append(modules[name].register_forward_pre_hook(pre))
    return hooks


def apply_pruning(model, pruned: dict[str, list[int]]) -> None:
    """Zero the pruned columns of a merged model's MLP output weights (same effect as the hooks)."""
    modules = named_modules(model)
    with torch.no_grad():
        for name, idx in pruned.items():
            if idx:
                modules[name].weight[:, idx] = 0


@register
class MANU(Method):
    name = "manu"

    def run_task(self, ctx) -> dict[str, float]:
        modules = mlp_outputs(ctx.model)
        n_batches = int(self.cfg.get("batches", 2))
        f = neuron_stats(ctx.model, [ctx.forget_batches() for _ in range(n_batches)], modules)
        r = neuron_stats(ctx.model, [ctx.retain_batches() for _ in range(n_batches)], modules)
        scores = importance_scores(f, r, self.cfg["weights"], float(self.cfg["eps"]))
        pruned = ctx.state.setdefault("pruned", {})
        new = select_top(scores, float(self.cfg["top_k"]), {k: set(v) for k, v in pruned.items()})
        for h in ctx.state.pop("hooks", []):
            h.remove()
        for name, idx in new.items():
            pruned[name] = sorted(set(pruned.get(name, [])) | set(idx))
        ctx.state["hooks"] = install_pruning(ctx.model, pruned)
        return {"pruned": float(sum(len(v) for v in new.values()))}
