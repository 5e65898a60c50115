"""Text-only unimodal branch with the real tiny model: a base built by the library from the smoke
dataset, its language model taken out, the branch's rows, memorisation, oracles, determinism."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from mmunlearn.params import ParamError
from mmunlearn.unimodal import text
from mmunlearn.unimodal.text import DEFAULT_CFG, SETTINGS, text_cfg, validate_cfg

KEYS = {"dataset", "method", "seed", "FA", "RA", "MIA", "AD", "JS", "retrained_distance"}
METRICS = sorted(KEYS - {"dataset", "method", "seed"})


def with_text(params: dict, **cfg) -> dict:
    out = copy.deepcopy(params)
    out.setdefault("unimodal", {})["text"] = {**copy.deepcopy(DEFAULT_CFG), **cfg}
    return out


def per_scale(value) -> dict:
    return {"smoke": value, "small": None, "full": None}


# ---- params (no model) ----------------------------------------------------------------------------

@pytest.mark.parametrize("key, value, named", [
    ("epochs", per_scale(0), "unimodal.text.epochs.smoke"),
    ("epochs", {"smoke": 2, "small": None}, "unimodal.text.epochs.full"),
    ("batch_size", per_scale(2.5), "unimodal.text.batch_size.smoke"),
    ("max_steps", per_scale(0), "unimodal.text.max_steps.smoke"),
    ("eval_retain", per_scale(1), "unimodal.text.eval_retain.smoke"),
    ("threads", 0, "unimodal.text.threads"),
    ("workers", -1, "unimodal.text.workers"),
    ("model", "/no/such/checkpoint", "unimodal.text.model"),
    ("model", 3, "unimodal.text.model"),
    ("typo", 1, "unimodal.text.typo"),
])
def test_bad_values_are_one_line_errors_naming_the_key(base_params, key, value, named):
    cfg = {**copy.deepcopy(DEFAULT_CFG), key: value}
    with pytest.raises(ParamError) as err:
        validate_cfg(cfg, base_params)
    assert err.value.key == named
    assert "\n" not in str(err.value) and named in str(err.value)


def test_block_defaults_and_scale_values(base_params):
    params = copy.deepcopy(base_params)
    params.setdefault("unimodal", {}).pop("text", None)
    assert text_cfg(params) == DEFAULT_CFG
    smoke = text.scale_values({**params, "scale": "smoke"}, DEFAULT_CFG)
    assert smoke == {"epochs": 2.0, "train_batch": 8, "unlearn_batch": 8, "max_steps": 1, "eval_retain": 16}
    small = text.scale_values({**params, "scale": "small"}, DEFAULT_CFG)   # null = the main pipeline's values
    assert small == {"epochs": float(params["finetune"]["epochs"]["small"]),
                     "train_batch": params["finetune"]["batch_size"],
                     "unlearn_batch": params["unlearn"]["batch_size"], "max_steps": None, "eval_retain": None}
    with pytest.raises(ParamError, match="methods"):
        text_cfg({**params, "methods": ["ga"]})


# ---- with the tiny model ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(smoke_dataset, tmp_path_factory):
    """(data dir, base dir, smoke params): a tiny LLaVA base built and pretrained by the library."""
    from mmunlearn.models.base import build_base

    root, params = smoke_dataset
    out = tmp_path_factory.mktemp("text_base")
    build_base(params, out_dir=out / "base", data_dir=root / "data", metrics_path=out / "base.json",
               progress=False)
    return root / "data", out / "base", params


@pytest.fixture(scope="module")
def text_rows(tiny):
    import pandas as pd

    qa = pd.read_parquet(tiny[0] / "qa.parquet")
    return qa[qa.view == "text"].head(8).to_dict("records")


@pytest.mark.slow
def test_language_model_is_the_vlms(tiny, text_rows):
    from mmunlearn.models.encode import collate, encode
    from mmunlearn.models.vlm import load_vlm

    vlm, processor = load_vlm(tiny[1])
    lm = text.language_model(vlm)
    assert type(lm).__name__ == "LlamaForCausalLM"
    assert all(n.startswith("model.") or n == "lm_head.weight" for n in lm.state_dict())
    batch = collate(encode(processor, text_rows, text._no_images), list(range(len(text_rows))),
                    processor.tokenizer.pad_token_id)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        assert torch.equal(lm(**inputs).logits, vlm(**inputs).logits)


@pytest.mark.slow
def test_a_causal_lm_checkpoint_directory_loads_offline(tiny, text_rows, tmp_path):
    from mmunlearn.models.encode import encode, prompt

    lm, processor = text.load_model("", tiny[1])
    lm.save_pretrained(tmp_path / "lm")
    processor.tokenizer.save_pretrained(tmp_path / "lm")
    validate_cfg({**DEFAULT_CFG, "model": str(tmp_path / "lm")})
    lm2, prompts = text.load_model(str(tmp_path / "lm"), tiny[1])
    assert isinstance(prompts, text.TextPrompts)
    # the tiny tokenizer's template reads list contents: the same prompts as through the processor
    assert [prompt(prompts, r) for r in text_rows] == [prompt(processor, r) for r in text_rows]
    enc = encode(prompts, text_rows, text._no_images)
    ids = torch.tensor([enc.input_ids[0]])
    with torch.no_grad():
        assert torch.equal(lm2(input_ids=ids).logits, lm(input_ids=ids).logits)
    prompts.tokenizer.chat_template = None   # no template: "Question: ...\nAnswer:"
    plain = text.TextPrompts(prompts.tokenizer)
    assert prompt(plain, text_rows[0]) == f"Question: {text_rows[0]['question']}\nAnswer:"


@pytest.fixture(scope="module")
def branch(tiny):
    """The branch at smoke scale with enough epochs to memorise, every method, the baselines."""
    data_dir, base_dir, params = tiny
    params = with_text(params, epochs=per_scale(6))
    return text.run_branch(params, base_dir=base_dir, data_dir=data_dir, baselines=True), params


@pytest.mark.slow
def test_rows_have_the_released_keys_for_every_setting_and_method(branch):
    out, params = branch
    skipped = set(out["seeds"][0]["skipped"])
    assert skipped <= {"manu"}   # refused by the library on a model without a vision part
    methods = [m for m in params["methods"] if m not in skipped]
    assert len(methods) >= 2
    got = [(r["dataset"], r["method"], r["seed"]) for r in out["rows"]]
    assert got == [(s, m, 0) for s in SETTINGS for m in methods]
    for r in out["rows"]:
        assert set(r) == KEYS
        assert all(isinstance(r[k], float) and math.isfinite(r[k]) for k in METRICS), r
        assert 0 <= r["FA"] <= 1 and 0 <= r["RA"] <= 1 and 0 <= r["MIA"] <= 1
        assert 0 <= r["JS"] <= math.log(2) and r["AD"] >= 0 and r["retrained_distance"] > 0


@pytest.mark.slow
def test_fine_tuned_lm_memorises_and_oracles_do_not_know_the_forget_rows(branch):
    seed = branch[0]["seeds"][0]
    memo = seed["memorisation"]
    assert memo["trained_acc"] >= 0.4 and memo["trained_acc"] >= memo["holdout_acc"] + 0.3, memo
    base = {(r["dataset"], r["method"]): r for r in seed["baselines"]}
    for setting in SETTINGS:
        oracle, finetuned = base[(setting, "oracle")], base[(setting, "finetuned")]
        assert oracle["FA"] <= memo["holdout_acc"] + 0.15, (setting, oracle)
        # scored against itself (other batch padding: rounding only)
        assert oracle["AD"] < 1e-4 and oracle["JS"] < 1e-6 and oracle["retrained_distance"] == 0.0
        assert finetuned["retrained_distance"] > 0 and finetuned["JS"] > 0
    icu = base[("text_icu", "finetuned")]["FA"] - base[("text_icu", "oracle")]["FA"]
    assert icu >= 0.25, icu   # every forget row: known after fine-tuning, not to its oracle


@pytest.mark.slow
def test_same_seed_gives_identical_rows_through_the_stage(tiny, tmp_path):
    from mmunlearn.unimodal.stage import run

    data_dir, base_dir, params = tiny
    params = with_text(params, epochs=per_scale(1))
    params["methods"] = ["ga", "npo", "salun"]
    both = text.run_branch({**params, "seeds": [0, 1]}, base_dir=base_dir, data_dir=data_dir)["rows"]
    rows = run({**params, "seeds": [0]}, out_path=tmp_path / "results.json", base_dir=base_dir, data_dir=data_dir)
    assert json.loads((tmp_path / "results.json").read_text()) == rows
    assert rows == [r for r in both if r["seed"] == 0]   # a seed's rows depend on that seed only
    other = [r for r in both if r["seed"] == 1]
    assert len(other) == len(rows) and [r["AD"] for r in other] != [r["AD"] for r in rows]
