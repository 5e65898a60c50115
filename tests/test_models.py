"""Tiny VLM: Auto* round trip, LoRA isolation, batched == per-sample, offline checkpoint errors."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from mmunlearn.models.base import chat_corpus
from mmunlearn.models.encode import collate, encode, prompt
from benchmarks.per_sample import generate_per_sample
from mmunlearn.models.engine import evaluate, generate, score
from mmunlearn.models.finetune import add_lora
from mmunlearn.models.scoring import answer_nll, sequence_logprob
from mmunlearn.models.tiny import build_tiny_llava
from mmunlearn.models.train import TrainConfig, train
from mmunlearn.models.vlm import CheckpointNotFound, load_vlm, resolve_checkpoint
from tests.conftest import run, set_param


@pytest.fixture(scope="module")
def tiny(rows):
    torch.manual_seed(0)
    return build_tiny_llava(chat_corpus(rows), seed=0)


def test_save_load_round_trip_through_auto_classes(tiny, rows, images, tmp_path):
    model, processor = tiny
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    model2, processor2 = load_vlm(tmp_path)
    assert type(model2).__name__ == "LlavaForConditionalGeneration"
    enc1, enc2 = encode(processor, rows, images), encode(processor2, rows, images)
    assert enc1.input_ids == enc2.input_ids
    b1 = collate(enc1, list(range(len(rows))), processor.tokenizer.pad_token_id)
    b2 = collate(enc2, list(range(len(rows))), processor2.tokenizer.pad_token_id)
    assert torch.equal(b1["pixel_values"], b2["pixel_values"])
    with torch.no_grad():
        l1 = model.eval()(**{k: v for k, v in b1.items() if k != "labels"}).logits
        l2 = model2(**{k: v for k, v in b2.items() if k != "labels"}).logits
    assert torch.equal(l1, l2)


def test_image_token_is_atomic_and_expanded(tiny, rows, images):
    model, processor = tiny
    tok = processor.tokenizer
    image_id = tok.convert_tokens_to_ids("<image>")
    assert model.config.image_token_index == image_id
    assert tok("<image><image>", add_special_tokens=False)["input_ids"] == [image_id, image_id]
    enc = encode(processor, rows, images)
    for ids, img in zip(enc.input_ids, enc.image):
        assert ids.count(image_id) == (16 if img else 0)


def test_lora_trains_adapter_only(tiny, rows, images):
    model, processor = tiny
    peft_model = add_lora(copy.deepcopy(model), {"finetune": {"lora": {
        "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj", "up_proj"]}}})
    before = {k: v.detach().clone() for k, v in peft_model.named_parameters()}
    enc = encode(processor, rows, images)
    train(peft_model, enc, processor.tokenizer.pad_token_id,
          TrainConfig(epochs=2, lr=1e-2, batch_size=8, seed=0), progress=False)
    changed = {k for k, v in peft_model.named_parameters() if not torch.equal(v, before[k])}
    assert changed and all("lora_" in k for k in changed)
    assert any("lora_B" in k for k in changed)
    frozen = [k for k in before if "lora_" not in k]
    assert frozen and all(torch.equal(dict(peft_model.named_parameters())[k], before[k]) for k in frozen)


@pytest.mark.parametrize("scale,rank,alpha", [("small", 2, 4), ("full", 8, 16)])
def test_lora_rank_and_alpha_follow_the_scale(tiny, scale, rank, alpha):
    """`finetune.lora.r/alpha` written per scale: the adapter of the run's scale, nothing else."""
    model, _ = tiny
    lora = {"r": {"smoke": 2, "small": 2, "full": 8}, "alpha": {"smoke": 4, "small": 4, "full": 16},
            "dropout": 0.0, "target_modules": ["q_proj"]}
    peft_model = add_lora(copy.deepcopy(model), {"scale": scale, "finetune": {"lora": lora}})
    assert (peft_model.peft_config["default"].r, peft_model.peft_config["default"].lora_alpha) == (rank, alpha)
    shapes = {tuple(p.shape) for k, p in peft_model.named_parameters() if "lora_A" in k and "language_model" in k}
    assert shapes == {(rank, model.config.text_config.hidden_size)}


def test_answer_losses_agree_with_hf_loss(tiny, rows, images):
    model, processor = tiny
    enc = encode(processor, rows, images)
    batch = collate(enc, list(range(8)), processor.tokenizer.pad_token_id)
    with torch.no_grad():
        hf = model.eval()(**batch).loss
        ours = answer_nll(model, batch)
        per_seq = sequence_logprob(model, batch)
    assert torch.allclose(hf, ours, atol=1e-5)
    n_tokens = (batch["labels"] != -100).sum()
    assert torch.allclose(-per_seq.sum() / n_tokens, ours, atol=1e-5)


def test_batched_engine_equals_per_sample(tiny, rows, images):
    model, processor = tiny
    enc = encode(processor, rows, images)
    ev = evaluate(model, processor, rows, images, batch_size=7, enc=enc, keep_dist=True)
    loop = generate_per_sample(model, processor, rows, images, max_new_tokens=8)
    assert generate(model, processor, enc, batch_size=5, max_new_tokens=8) == loop
    # teacher-forced exact match <=> greedy generation reproduces the answer
    open_forms = [i for i, r in enumerate(rows) if r["form"] != "classification"]
    assert [bool(ev.frame.tf_exact[i]) for i in open_forms] == [loop[i] == str(rows[i]["answer"]) for i in open_forms]
    # scores do not depend on batch composition
    ev1 = evaluate(model, processor, rows, images, batch_size=1, enc=enc, keep_dist=True)
    np.testing.assert_allclose(ev.scores.logprob_sum, ev1.scores.logprob_sum, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ev.scores.hidden, ev1.scores.hidden, rtol=1e-4, atol=1e-5)
    for a, b in zip(ev.scores.dist, ev1.scores.dist):
        np.testing.assert_allclose(a, b, atol=1e-5)
        np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-4)
    assert (ev.frame.chosen_option >= 0).sum() == sum(r["form"] == "classification" for r in rows)
    # correctness-only passes do not decode option-answered rows, and score every row the same
    lean = evaluate(model, processor, rows, images, batch_size=7, enc=enc, option_texts=False)
    cls = np.array([r["form"] == "classification" for r in rows])
    assert cls.any() and (~cls).any()
    assert list(lean.frame.correct) == list(ev.frame.correct)
    assert (lean.frame.generated[cls] == "").all()
    assert list(lean.frame.generated[~cls]) == list(ev.frame.generated[~cls])


def test_fast_paths_equal_the_reference_pass(tiny, rows, images, monkeypatch):
    """Image features once per distinct image + the last layer on answer positions == the
    reference pass (vision tower on every row's pixels, every position), for every field of
    Scores; each part checked once per model configuration and kept."""
    from mmunlearn.models import fastpath

    model, processor = tiny
    refs = [r["image"] for r in rows if isinstance(r.get("image"), str) and r["image"]]
    assert len(set(refs)) < len(refs), "fixture should ask several questions about one image"
    enc = encode(processor, rows, images)
    # prompts on an image already processed are tokenized without the processor: same ids
    for row, ids, n in zip(rows, enc.input_ids, enc.prompt_len):
        if isinstance(row.get("image"), str) and row["image"]:
            ref = processor(text=[prompt(processor, row)], images=[images(row["image"])], return_tensors="pt")
            assert ids[:n] == ref["input_ids"][0].tolist()
            assert torch.equal(enc.pixels[row["image"]]["pixel_values"], ref["pixel_values"])
    pad = processor.tokenizer.pad_token_id
    plain = score(model, enc, pad, batch_size=5, keep_dist=True, fast=False)
    seen = []
    inner = model.get_image_features

    def counting(pixel_values, **kw):
        seen.append(pixel_values.shape[0])
        return inner(pixel_values=pixel_values, **kw)

    monkeypatch.setattr(model, "get_image_features", counting)
    fast = score(model, enc, pad, batch_size=5, keep_dist=True)
    assert fastpath.FastPath.candidates(model, enc, -2) == ("images", "tail")
    assert fastpath._CHECKED[fastpath.config_key(model, "score", ("images", "tail"), -2)] is True
    assert sum(seen) <= len(set(refs)) + 1  # + the one-row check (first call per configuration)
    assert np.array_equal(fast.exact, plain.exact) and np.array_equal(fast.n_tokens, plain.n_tokens)
    for f in ("logprob_sum", "max_prob", "neg_entropy", "margin", "hidden"):
        np.testing.assert_allclose(getattr(fast, f), getattr(plain, f), rtol=1e-5, atol=1e-5, err_msg=f)
    for f in ("token_logprobs", "token_zpp", "dist"):
        for a, b in zip(getattr(fast, f), getattr(plain, f)):
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=f)
    assert all(np.array_equal(a, b) for a, b in zip(fast.token_ids, plain.token_ids))
    assert score(model, enc, pad, hidden_layer=None).hidden.shape == (len(rows), 0)


def test_a_failed_check_falls_back_to_the_reference_pass(tiny, rows, images, monkeypatch):
    """A configuration whose fast part is not exact gets the reference pass (same scores)."""
    from mmunlearn.models import fastpath

    model, processor = tiny
    few = [r for r in rows if isinstance(r.get("image"), str) and r["image"]][:6] + [r for r in rows if not r.get("image")][:2]
    enc = encode(processor, few, images)
    pad = processor.tokenizer.pad_token_id
    plain = score(model, enc, pad, batch_size=4, fast=False)
    monkeypatch.setattr(fastpath, "_CHECKED", {})
    monkeypatch.setattr(fastpath, "answer_positions", lambda batch: (1, None))  # the tail drops answer logits
    got = score(model, enc, pad, batch_size=4)
    verdicts = {key[-2]: ok for key, ok in fastpath._CHECKED.items()}
    assert verdicts == {("images", "tail"): False, ("images",): True}
    np.testing.assert_allclose(got.logprob_sum, plain.logprob_sum, rtol=1e-5, atol=1e-5)


def test_packed_option_scoring_equals_full(tiny, rows, images):
    """Classification: prompt once with every option packed after it == each option sequence scored
    in full (summed log-probabilities to 1e-4, same chosen option)."""
    from mmunlearn.models import engine, fastpath
    from mmunlearn.models.encode import repeat

    model, processor = tiny
    cls = [r for r in rows if r["form"] == "classification"]
    assert cls
    pad = processor.tokenizer.pad_token_id
    flat_rows, answers, owner = engine.option_sequences(cls)
    flat = repeat(encode(processor, cls, images), owner, processor.tokenizer, answers)
    full = score(model, flat, pad, batch_size=5, hidden_layer=None, fast=False)
    packed = fastpath.option_sums(model, flat, owner, pad, 3)
    assert packed is not None
    np.testing.assert_allclose(packed, full.logprob_sum, rtol=1e-5, atol=1e-4)
    chosen = engine.choose_options(model, processor, cls, images, batch_size=3)
    assert np.array_equal(chosen, engine.choose_options(model, processor, cls, images, batch_size=3, fast=False))
    # the rows' own encoding reused for the options (no image processed again): same choice
    assert np.array_equal(chosen, engine.choose_options(model, processor, cls, images, batch_size=3,
                                                        enc=encode(processor, cls, images)))


def test_image_cache_reencodes_identically(tiny, rows, images):
    """Encoding through a shared ImageCache (images processed by an earlier call) gives the same ids,
    prompt lengths and pixels as encoding from scratch, and loads no cached image again."""
    from mmunlearn.models.encode import ImageCache

    _, processor = tiny
    cache = ImageCache()
    visual = [r for r in rows if r["image"]]
    first, second = visual[: len(visual) // 2], visual[len(visual) // 4:]  # overlapping images
    encode(processor, first, images, cache=cache)
    assert cache.n_tokens and set(cache.n_tokens) <= set(cache.pixels)
    before = set(cache.n_tokens)
    loaded = []

    def counting(name):
        loaded.append(name)
        return images(name)

    again = encode(processor, second + rows[:3], counting, cache=cache)
    fresh = encode(processor, second + rows[:3], images)
    assert again.input_ids == fresh.input_ids and again.prompt_len == fresh.prompt_len
    assert again.image == fresh.image and set(again.pixels) == set(fresh.pixels)
    for name, pix in fresh.pixels.items():
        assert all(torch.equal(pix[k], again.pixels[name][k]) for k in pix)
    assert loaded and not set(loaded) & before  # only the images new to the cache were loaded


def test_memorising_model_scores_its_answers(tiny, rows, images):
    """A few full-parameter epochs on a handful of rows: teacher-forced accuracy reaches 1."""
    model, processor = tiny
    model = copy.deepcopy(model)
    few = rows[:6]
    enc = encode(processor, few, images)
    train(model, enc, processor.tokenizer.pad_token_id,
          TrainConfig(epochs=60, lr=3e-3, batch_size=6, seed=0, scheduler="constant"), progress=False)
    ev = evaluate(model, processor, few, images, enc=enc)
    assert ev.frame.correct.all()
    assert generate(model, processor, enc) == [str(r["answer"]) for r in few]
    # only rows not exact under teacher forcing are decoded: same texts
    mixed = rows[:12]
    enc_m = encode(processor, mixed, images)
    ev_m = evaluate(model, processor, mixed, images, enc=enc_m)
    assert ev_m.frame.tf_exact[:6].all() and not ev_m.frame.tf_exact.all()
    assert list(ev_m.frame.generated) == generate(model, processor, enc_m)


def test_gradient_accumulation_averages_the_accumulated_batches(tiny, rows, images):
    """Batches of 2 accumulated twice log the mean loss of the step, as one batch of 4 does: not
    the sum of the two half-batch means (LLaVA's `**kwargs` forward would make the Trainer assume
    the loss was normalised by the accumulated token count and skip its division)."""
    model, processor = tiny
    enc = encode(processor, rows[:4], images)
    loss = {}
    for bs, acc in ((4, 1), (2, 2)):
        m = add_lora(copy.deepcopy(model), {"finetune": {"lora": {
            "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}}})
        hist = train(m, enc, processor.tokenizer.pad_token_id,
                     TrainConfig(epochs=1, lr=1e-3, batch_size=bs, grad_accum=acc, seed=0), progress=False)
        assert [h["step"] for h in hist if "loss" in h] == [1]
        loss[acc] = hist[-1]["train_loss"]
    assert loss[2] == pytest.approx(loss[1], rel=0.15)


def test_missing_checkpoint_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(CheckpointNotFound) as err:
        resolve_checkpoint("nobody-org/no-such-vlm-7b")
    msg = str(err.value)
    assert "no-such-vlm-7b" in msg and "download" in msg and "\n" not in msg
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointNotFound, match="config.json"):
        resolve_checkpoint(str(tmp_path / "empty"))


def test_base_stage_rejects_unknown_checkpoint(repo, tmp_path):
    set_param(repo, "model", "nobody-org/no-such-vlm-7b")
    run(["python", "-m", "stages.assemble"], repo)
    proc = run(["python", "-m", "stages.base"], repo, check=False, HF_HOME=str(tmp_path / "hf"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "model='nobody-org/no-such-vlm-7b'" in lines[0]
    assert not (repo / "models").exists()
