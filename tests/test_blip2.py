"""The tiny-blip2 preset (cross-architecture branch): Auto* round trip, engine fast paths equal to
the plain pass, architecture parts for MANU, and the whole library path at smoke scale."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from mmunlearn.models.arch import UnsupportedModel, model_parts, no_image_inputs
from mmunlearn.models.base import chat_corpus
from mmunlearn.models.encode import collate, encode, prompt
from benchmarks.per_sample import generate_per_sample
from mmunlearn.models.engine import choose_options, generate, score
from mmunlearn.models.scoring import answer_nll
from mmunlearn.models.tiny import PRESETS, build_tiny_blip2
from mmunlearn.models.vlm import TINY_PRESETS, load_vlm

QUERIES = PRESETS["tiny-blip2"]["num_query_tokens"]


@pytest.fixture(scope="module")
def tiny(rows):
    model, processor = build_tiny_blip2(chat_corpus(rows, "tiny-blip2"), seed=0)
    return model.eval(), processor


def _logits(model, batch):
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


def test_preset_is_listed_and_deterministic(rows):
    assert "tiny-blip2" in TINY_PRESETS
    a, _ = build_tiny_blip2(chat_corpus(rows, "tiny-blip2"), seed=3)
    b, _ = build_tiny_blip2(chat_corpus(rows, "tiny-blip2"), seed=3)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert 1.5e6 < sum(p.numel() for p in a.parameters()) < 3e6


def test_save_load_round_trip_through_auto_classes(tiny, rows, images, tmp_path):
    model, processor = tiny
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    model2, processor2 = load_vlm(tmp_path)
    sa, sb = model.state_dict(), model2.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)   # the weights, bit for bit
    assert type(model2).__name__ == "Blip2ForConditionalGeneration"
    assert type(processor2).__name__ == "Blip2Processor"
    assert type(processor2.image_processor).__name__ == "BlipImageProcessorPil"
    assert processor2.num_query_tokens == QUERIES
    assert [prompt(processor2, r) for r in rows] == [prompt(processor, r) for r in rows]
    enc1, enc2 = encode(processor, rows, images), encode(processor2, rows, images)
    assert enc1.input_ids == enc2.input_ids
    text = [i for i, r in enumerate(rows) if r["view"] == "text"]
    for idx in (list(range(len(rows))), text):  # mixed batch; batch without any image
        b1 = collate(enc1, idx, processor.tokenizer.pad_token_id)
        b2 = collate(enc2, idx, processor2.tokenizer.pad_token_id)
        assert ("pixel_values" in b1) == (idx != text)
        if "pixel_values" in b1:
            assert torch.equal(b1["pixel_values"], b2["pixel_values"])
            # same weights, same inputs; the CPU kernels may still sum in another order (their
            # choice can depend on where the loaded tensors lie in memory; one fresh-clone run differed
            # in the 4th decimal of a few logits, 2026-12-06): float32 rounding, not a round-trip fault
            torch.testing.assert_close(_logits(model, b1), _logits(model2, b2), rtol=1e-4, atol=1e-4)
        else:
            with torch.no_grad():
                torch.testing.assert_close(answer_nll(model, b1), answer_nll(model2, b2), rtol=1e-4, atol=1e-5)


def test_image_tokens_are_prepended_queries(tiny, rows, images, monkeypatch):
    """Blip2Processor prepends one `<image>` per query; `encode` reproduces that expansion for
    further prompts on an image, so each distinct image goes through the processor once."""
    model, processor = tiny
    tok = processor.tokenizer
    image_id = tok.convert_tokens_to_ids("<image>")
    assert model.config.image_token_index == image_id
    assert tok("<image><image>", add_special_tokens=False)["input_ids"] == [image_id, image_id]
    assert "<image>" not in prompt(processor, rows[-1]) and prompt(processor, rows[-1]).endswith(" Answer:")
    processed = []
    preprocess = processor.image_processor.preprocess
    monkeypatch.setattr(processor.image_processor, "preprocess",
                        lambda imgs, *a, **kw: processed.append(len(imgs)) or preprocess(imgs, *a, **kw))
    enc = encode(processor, rows, images)
    monkeypatch.undo()
    assert sum(processed) == len({img for img in enc.image if img})
    for row, ids, n, img in zip(rows, enc.input_ids, enc.prompt_len, enc.image):
        assert ids.count(image_id) == (QUERIES if img else 0)
        if img:  # encode's own expansion == the processor's ids
            assert ids[:QUERIES] == [image_id] * QUERIES
            ref = processor(text=[prompt(processor, row)], images=[images(img)], return_tensors="pt")
            assert ids[:n] == ref["input_ids"][0].tolist()


def test_text_only_batch_is_the_language_model_alone(tiny, rows, images):
    model, processor = tiny
    enc = encode(processor, rows, images)
    text = [i for i, r in enumerate(rows) if r["view"] == "text"]
    batch = collate(enc, text, processor.tokenizer.pad_token_id)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        full = model(**inputs, **no_image_inputs(model)).logits
        alone = model.language_model(**inputs).logits
    assert torch.equal(full, alone)


def test_engine_fast_paths_equal_plain_per_sample(tiny, rows, images):
    """Feature reuse per image (Q-Former outputs), the last decoder layer on answer positions and
    packed options: all taken for BLIP-2 (their one-row checks pass) and equal to the reference
    pass; batched greedy generation equals the per-sample generate loop."""
    from mmunlearn.models import fastpath

    model, processor = tiny
    pad = processor.tokenizer.pad_token_id
    enc = encode(processor, rows, images)
    plain = score(model, enc, pad, batch_size=1, keep_dist=True, fast=False)
    assert fastpath.tail_modules(model, -2) and fastpath.tail_modules(model, None)
    assert fastpath.FastPath.candidates(model, enc, -2) == ("images", "tail")
    fast = score(model, enc, pad, batch_size=5, keep_dist=True)
    assert fastpath._CHECKED[fastpath.config_key(model, "score", ("images", "tail"), -2)] is True
    assert np.array_equal(fast.exact, plain.exact) and np.array_equal(fast.n_tokens, plain.n_tokens)
    for f in ("logprob_sum", "max_prob", "neg_entropy", "margin", "hidden"):
        np.testing.assert_allclose(getattr(fast, f), getattr(plain, f), rtol=1e-5, atol=1e-5, err_msg=f)
    for a, b in zip(fast.dist, plain.dist):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    cls = [r for r in rows if r["form"] == "classification"]
    assert {isinstance(r["image"], str) and bool(r["image"]) for r in cls} == {True, False}
    packed = choose_options(model, processor, cls, images, batch_size=3)
    assert fastpath._CHECKED[fastpath.config_key(model, "options", True)] is True
    assert np.array_equal(packed, choose_options(model, processor, cls, images, batch_size=1, fast=False))
    loop = generate_per_sample(model, processor, rows, images, max_new_tokens=6)
    assert generate(model, processor, enc, batch_size=5, max_new_tokens=6) == loop


def test_parts_for_multimodal_methods(tiny):
    from mmunlearn.methods.manu import mlp_outputs
    from mmunlearn.models.finetune import add_lora

    model, _ = tiny
    parts = model_parts(model)
    assert parts == {"vision": ["vision_model"], "projector": ["qformer", "language_projection", "query_tokens"],
                     "language": ["language_model"]}
    lora = add_lora(copy.deepcopy(model), {"seed": 0, "finetune": {"lora": {
        "r": 4, "alpha": 8, "dropout": 0.0,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}}})
    adapted = {n.split(".lora_A")[0].removeprefix("base_model.model.") for n, _ in lora.named_parameters()
               if ".lora_A" in n}
    assert adapted and all(n.startswith("language_model.") for n in adapted)
    assert len(adapted) == 7 * PRESETS["tiny-blip2"]["text"]["num_hidden_layers"]
    assert model_parts(lora) == parts
    names = sorted(mlp_outputs(lora))
    assert names == sorted(mlp_outputs(model))
    assert {n.split(".")[0] for n in names} == {"vision_model", "language_model"}
    assert all(n.endswith((".mlp.fc2", ".mlp.down_proj")) for n in names)
    text_only = model.language_model  # a causal LM: no vision part
    with pytest.raises(UnsupportedModel, match="'manu'.*'llama'.*vision"):
        mlp_outputs(text_only)


@pytest.mark.slow
def test_library_end_to_end_at_smoke_scale(tmp_path, monkeypatch, base_params):
    """assemble -> base -> finetune -> oracles -> unlearn (ga, npo) -> evaluation with
    `model: tiny-blip2`: the fine-tuned model memorises, and every released row is numeric."""
    from mmunlearn.data.assemble import assemble
    from mmunlearn.methods.runner import unlearn
    from mmunlearn.metrics.columns import row_metrics
    from mmunlearn.metrics.evaluate import evaluate_baselines, evaluate_method
    from mmunlearn.models.base import build_base
    from mmunlearn.models.finetune import finetune, train_oracles

    params = copy.deepcopy(base_params)
    params.update(scale="smoke", model="tiny-blip2", methods=["ga", "npo"], method="npo")
    monkeypatch.chdir(tmp_path)
    assemble(params, root=".", progress=False)
    base = build_base(params, progress=False)
    assert base["trained"] and base["public_acc"] >= 0.9, base
    assert json.loads((tmp_path / "models" / "base" / "config.json").read_text())["model_type"] == "blip-2"
    ft = finetune(params, progress=False)
    assert ft["trained_acc"] >= 0.8 and ft["trained_text_acc"] >= 0.8 and ft["trained_vqa_masked_acc"] >= 0.8, ft
    assert ft["holdout_acc"] <= 0.3, ft
    oracles = train_oracles(params)
    assert all(o["forget_acc"] <= 0.3 for o in oracles.values()), oracles
    for method in params["methods"]:
        unlearn(params, method, progress=False)
    evaluate_baselines(params, progress=False)
    for method in params["methods"]:
        summary = evaluate_method(params, method, progress=False)
        assert set(summary) == {"icu/0", "fiu/0", "umu/0"}
        for row in summary.values():
            for key in (i.name for i in row_metrics()):
                assert isinstance(row[key], float) and np.isfinite(row[key]), (method, key, row)
        doc = json.loads((tmp_path / "outputs" / "eval" / method / "icu_seed0.json").read_text())
        assert doc["row"]["method"] == method and doc["continual"]["A"]
