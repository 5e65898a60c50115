"""Masked methods keep their promise: outside the mask nothing changes, bit for bit.

SalUn and MMUnlearner's ascent steps go through `Method.masked_update`; MANU prunes only neurons on
the model's path, with statistics over real tokens. The continual checks run the real runner
(`run_sequence`) over the smoke dataset's three forget tasks, with the one AdamW it keeps across
tasks (whose momentum is what used to leak past the masks).
"""
from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch

from mmunlearn.methods.base import Context, GradientSteps, Method, trainable
from mmunlearn.methods.mmunlearner import MMUnlearner
from mmunlearn.methods.salun import top_k_mask


# ---- the mechanism, by hand ---------------------------------------------------------------------

def adam_with_momentum(seed: int = 0):
    """A linear layer, and AdamW after one unmasked step: every weight has momentum."""
    torch.manual_seed(seed)
    layer = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(layer.parameters(), lr=0.1, weight_decay=0.01)
    layer(torch.randn(5, 4)).square().sum().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    layer(torch.randn(5, 4)).square().sum().backward()   # the masked step's gradient
    return layer, opt


def test_masked_update_keeps_weights_outside_the_mask_under_adam_momentum():
    mask = {"weight": torch.tensor([[True, False, False, True]] * 3), "bias": torch.tensor([True, False, True])}
    # zeroing the gradients alone (the old rule): momentum and weight decay still move them
    layer, opt = adam_with_momentum()
    before = {n: p.detach().clone() for n, p in layer.named_parameters()}
    for n, p in layer.named_parameters():
        p.grad.masked_fill_(~mask[n], 0)
    opt.step()
    assert all(not torch.equal(p[~mask[n]], before[n][~mask[n]]) for n, p in layer.named_parameters())
    # masked_update: the same state, the same gradients; outside the mask bit-identical
    layer, opt = adam_with_momentum()
    before = {n: p.detach().clone() for n, p in layer.named_parameters()}
    ctx = Context(model=layer, ref=None, optimizer=opt, accelerator=None, rng=np.random.default_rng(0),
                  forget_batches=None, retain_batches=None, state={"grad_mask": mask})
    Method(GradientSteps(lr=0.1, steps=1)).masked_update(ctx)
    for n, p in layer.named_parameters():
        assert torch.equal(p[~mask[n]], before[n][~mask[n]])
        assert (p[mask[n]] != before[n][mask[n]]).all()


def test_masked_update_freezes_a_tensor_the_mask_does_not_name():
    layer, opt = adam_with_momentum()
    bias = layer.bias.detach().clone()
    ctx = Context(model=layer, ref=None, optimizer=opt, accelerator=None, rng=np.random.default_rng(0),
                  forget_batches=None, retain_batches=None,
                  state={"grad_mask": {"weight": torch.ones(3, 4, dtype=torch.bool)}})
    Method(GradientSteps(lr=0.1, steps=1)).masked_update(ctx)
    assert torch.equal(layer.bias, bias)


def test_top_k_mask_takes_exactly_k_despite_ties():
    scores = {"a": torch.tensor([0.0, 3.0, 0.0, 1.0]), "b": torch.tensor([[0.0, 2.0], [0.0, 0.0]])}
    mask = top_k_mask(scores, 0.5)   # 4 of 8 entries: 3, 2, 1, then the first zero (a[0])
    assert mask["a"].tolist() == [True, True, False, True]
    assert mask["b"].tolist() == [[False, True], [False, False]]
    assert sum(int(m.sum()) for m in top_k_mask(scores, 0.75).values()) == 6


# ---- the tiny fine-tuned model ------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(smoke_pipeline):
    from mmunlearn.params import load

    repo = smoke_pipeline
    return (repo, load(repo / "params.yaml"), pd.read_parquet(repo / "data" / "qa.parquet"),
            pd.read_parquet(repo / "data" / "profiles.parquet"))


@pytest.fixture(scope="module")
def lora(trained):
    """(fine-tuned LoRA model, processor, image loader) for in-process checks."""
    from mmunlearn.methods.runner import load_trainable
    from mmunlearn.models.encode import file_images

    repo = trained[0]
    model, processor = load_trainable(repo / "models" / "base", repo / "models" / "finetuned")
    return model, processor, file_images(repo / "data")


def run_icu(trained, tmp_path, name: str, steps: int = 3):
    """`name` through `run_sequence` over the three continual tasks; the checkpoint directory."""
    from mmunlearn.methods.runner import run_sequence

    repo, params, qa, profiles = trained
    params = copy.deepcopy(params)
    if "steps" in params["unlearn"][name]:
        params["unlearn"][name]["steps"] = steps
    out = tmp_path / name
    log = run_sequence(name, params, "icu", 0, qa, profiles, repo / "models" / "base",
                       repo / "models" / "finetuned", repo / "data", out, progress=False)
    assert [e["checkpoint"] for e in log] == ["task001", "task002", "task003"]
    return out


def snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainable(model).items()}


def spy(monkeypatch, cls, attr: str, calls: list) -> None:
    """Wrap `cls.attr(self, ctx, ...)`: each call runs unchanged and records (weights before,
    weights after, the mask in force after it)."""
    real = getattr(cls, attr)

    def wrapped(self, ctx, *args):
        before = snapshot(ctx.model)
        out = real(self, ctx, *args)
        mask = {n: m.clone() for n, m in ctx.state["grad_mask"].items()}
        calls.append((before, snapshot(ctx.model), mask))
        return out
    monkeypatch.setattr(cls, attr, wrapped)


def moved(before: dict, after: dict, mask: dict, inside: bool) -> int:
    """How many weights changed inside (or outside) the mask."""
    return sum(int(((after[n] != before[n]) & (mask[n] if inside else ~mask[n])).sum()) for n in before)


def test_salun_changes_nothing_outside_each_tasks_mask(trained, tmp_path, monkeypatch):
    tasks: list = []
    spy(monkeypatch, Method, "unlearn_task", tasks)
    run_icu(trained, tmp_path, "salun")
    assert len(tasks) == 3
    for before, after, mask in tasks:
        share = sum(int(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values())
        assert 0.4 < share < 0.6                      # top_k 0.5 of the trainable weights
        for n in before:
            assert torch.equal(after[n][~mask[n]], before[n][~mask[n]]), n
        assert moved(before, after, mask, inside=True) > 0
    assert any(not torch.equal(tasks[0][2][n], tasks[1][2][n]) for n in tasks[0][2])   # one mask per task


def test_mmunlearner_ascent_steps_change_nothing_outside_the_mask(trained, tmp_path, monkeypatch):
    """The paper's retain steps are unmasked; every ascent step, in every task, with the AdamW
    that the retain steps and earlier tasks filled, leaves the weights outside the mask equal."""
    ascents: list = []
    tasks: list = []
    spy(monkeypatch, MMUnlearner, "ascent_step", ascents)
    spy(monkeypatch, Method, "unlearn_task", tasks)
    run_icu(trained, tmp_path, "mmunlearner")
    assert len(ascents) == 9 and len(tasks) == 3
    for before, after, mask in ascents:
        assert 0 < sum(int(m.sum()) for m in mask.values()) < sum(m.numel() for m in mask.values())
        for n in before:
            assert torch.equal(after[n][~mask[n]], before[n][~mask[n]]), n
        assert moved(before, after, mask, inside=True) > 0
    for before, after, mask in tasks:   # the unmasked retain steps do move them
        assert moved(before, after, mask, inside=False) > 0


def test_manu_prunes_cumulatively_and_changes_nothing_else(trained, tmp_path, lora):
    from safetensors.torch import load_file

    from mmunlearn.methods.manu import mlp_outputs
    from mmunlearn.models.vlm import load_checkpoint

    repo = trained[0]
    out = run_icu(trained, tmp_path, "manu")
    adapter = "adapter_model.safetensors"
    ft_adapter = load_file(repo / "models" / "finetuned" / adapter)
    ft = load_checkpoint(repo / "models" / "base", repo / "models" / "finetuned")[0].state_dict()
    candidates = set(mlp_outputs(lora[0]))
    previous: dict[str, set[int]] = {}
    for task in ("task001", "task002", "task003"):
        got = load_file(out / task / adapter)
        assert all(torch.equal(got[k], ft_adapter[k]) for k in ft_adapter)   # no gradient step
        pruned = {k: set(v) for k, v in json.loads((out / task / "pruned.json").read_text()).items()}
        assert set(pruned) <= candidates
        assert all(previous[k] <= pruned.get(k, set()) for k in previous)     # cumulative
        assert sum(map(len, pruned.values())) > sum(map(len, previous.values()))
        model = load_checkpoint(repo / "models" / "base", out / task)[0].state_dict()
        assert set(model) == set(ft)
        for key, w in model.items():
            module = key.removesuffix(".weight")
            if key.endswith(".weight") and module in pruned:
                cols = sorted(pruned[module])
                keep = [i for i in range(w.shape[1]) if i not in pruned[module]]
                assert (w[:, cols] == 0).all() and torch.equal(w[:, keep], ft[key][:, keep]), key
            else:
                assert torch.equal(w, ft[key]), key
        previous = pruned


# ---- MANU: path and real tokens ------------------------------------------------------------------

def mlp_inputs_feeding_logits(model, batch) -> set[str]:
    """The fc2 / down_proj modules whose input the logits depend on (autograd reaches it)."""
    from mmunlearn.methods.manu import PRUNABLE
    from mmunlearn.models.arch import named_modules
    from mmunlearn.models.scoring import model_inputs

    seen: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda _m, inp, n=n: seen.__setitem__(n, inp[0]))
             for n, m in named_modules(model).items() if n.rsplit(".", 1)[-1] in PRUNABLE and hasattr(m, "in_features")]
    try:
        logits = model(**model_inputs(batch, model)).logits
    finally:
        for h in hooks:
            h.remove()
    names = [n for n in seen if seen[n].requires_grad]
    grads = torch.autograd.grad(logits.sum(), [seen[n] for n in names], allow_unused=True)
    return {n for n, g in zip(names, grads) if g is not None}


def image_batch(lora, qa, n: int = 6) -> dict:
    from mmunlearn.models.encode import collate, encode

    model, processor, images = lora
    rows = pd.concat([qa[qa.view == "vqa_full"].head(n // 2), qa[qa.view == "text"].head(n - n // 2)])
    enc = encode(processor, rows.to_dict("records"), images)
    return collate(enc, list(range(len(enc))), processor.tokenizer.pad_token_id)


def test_manu_candidates_are_the_mlp_neurons_on_the_output_path(trained, lora):
    """LLaVA reads hidden state -2 of the tiny 2-layer vision tower: its last layer feeds nothing,
    so its neurons are no candidates; every other MLP is."""
    from mmunlearn.methods.manu import mlp_outputs
    from mmunlearn.models.arch import vision_layers_used

    model = lora[0]
    assert vision_layers_used(model) == 1
    names = set(mlp_outputs(model))
    assert names == mlp_inputs_feeding_logits(model, image_batch(lora, trained[2]))
    vision = {n for n in names if ".vision_tower." in f".{n}"}
    assert vision == {n for n in vision if ".layers.0." in n} and vision
    assert len(names - vision) == 2   # both language layers' down_proj


def left_pad(batch: dict, extra: int, pad_id: int) -> dict:
    """The same rows with `extra` more padding columns on the left."""
    out = dict(batch)
    rows = batch["input_ids"].shape[0]
    for key, fill in (("input_ids", pad_id), ("attention_mask", 0), ("labels", -100)):
        out[key] = torch.cat([torch.full((rows, extra), fill, dtype=batch[key].dtype), batch[key]], dim=1)
    return out


def test_manu_statistics_do_not_depend_on_padding(trained, lora):
    from mmunlearn.methods.manu import STATS, mlp_outputs, neuron_stats

    model, processor, _ = lora
    model.eval()
    batch = image_batch(lora, trained[2])
    assert (batch["attention_mask"] == 0).any()   # rows of different lengths: padded already
    modules = mlp_outputs(model)
    tight = neuron_stats(model, [batch], modules)
    padded = neuron_stats(model, [left_pad(batch, 9, processor.tokenizer.pad_token_id)], modules)
    tokens = int(batch["attention_mask"].sum())
    for name in modules:
        for stat in STATS:
            # left padding shifts the positions (RoPE): equal up to float rounding; a sign flip
            # at a near-zero activation moves a frequency by one token at most
            atol = 1.5 / tokens if stat == "frequency" else 1e-5
            torch.testing.assert_close(padded[name][stat], tight[name][stat], rtol=1e-4, atol=atol,
                                       msg=f"{name} {stat}")
    model.train()
