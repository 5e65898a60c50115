"""Text-only unimodal branch with the real tiny model: a base built by the library from the smoke
dataset, its language model taken out, rows scored as the main evaluator scores them, the branch's
rows, memorisation, oracles, determinism."""
from __future__ import annotations

import copy
import json
import math
import shutil

import numpy as np
import pandas as pd
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
                     "unlearn_batch": params["unlearn"]["batch_size"], "max_steps": None,
                     "eval_retain": params["metrics"]["eval_retain_rows"]["small"]}
    everything = {**params, "scale": "small", "metrics": {**params["metrics"], "eval_retain_rows": 0}}
    assert text.scale_values(everything, DEFAULT_CFG)["eval_retain"] is None   # 0 = every retain row
    with pytest.raises(ParamError, match="methods"):
        text_cfg({**params, "methods": ["ga"]})


# ---- the main evaluator's row metrics (no model) -----------------------------------------------------

def _scores(n: int, seed: int):
    """Engine scores of `n` rows with seeded per-row MIA features and 3 answer tokens each."""
    from mmunlearn.models.engine import Scores

    rng = np.random.default_rng(seed)
    tok = [rng.normal(-1.0, 0.5, 3) for _ in range(n)]
    return Scores(logprob_sum=np.array([t.sum() for t in tok]), n_tokens=np.full(n, 3), exact=np.zeros(n, bool),
                  max_prob=rng.uniform(0.2, 1.0, n), neg_entropy=-rng.uniform(0.0, 2.0, n),
                  margin=rng.uniform(0.0, 0.8, n), hidden=np.zeros((n, 0), np.float32), token_logprobs=tok,
                  token_zpp=[2 * t for t in tok], token_ids=[np.arange(3)] * n)


def test_fa_ra_mia_come_from_the_main_row_definition_and_attack(base_params):
    """FA by `metrics.rows.row_correct` of the greedy answers and chosen options (containment
    counts, a sign does not; teacher-forced exact match, all False here, plays no part) and MIA by
    the main evaluator's `mia_metrics`: the same values from the same rows, choices and scores."""
    from mmunlearn.metrics import mia_attack, mia_features, row_correct
    from mmunlearn.metrics.evaluate import mia_metrics
    from mmunlearn.models.engine import Evaluation

    opts = ["O+", "A+", "B-", "AB+"]
    rows = [{"form": "generation", "answer": "Dr. Ana Ruiz", "options": None},
            {"form": "cloze", "answer": "A+", "options": None},
            {"form": "classification", "answer": "A+", "options": opts},
            {"form": "classification", "answer": "A+", "options": opts}]
    chosen, generated = [-1, -1, 1, 2], ["It was dr ana ruiz.", "A-", "", ""]
    forget = Evaluation(pd.DataFrame({"correct": row_correct(rows, chosen, generated)}), _scores(4, 0))
    retain = Evaluation(pd.DataFrame({"correct": row_correct(rows[:2], [-1, -1], ["Ana Ruiz", "a+"])}), _scores(2, 1))
    holdout, cfg = _scores(12, 2), base_params["metrics"]
    got = text.headline(forget, retain, holdout, rows, [{"answer": "x"}] * 12, cfg, 7)
    # forget: [gold contained: yes, sign differs: no, option 1: yes, option 2: no];
    # retain: [gold not contained in a shorter answer: no, case only: yes]
    assert got["FA"] == 0.5 and got["RA"] == 0.5
    feats = [mia_features(s.max_prob, s.neg_entropy, s.margin) for s in (forget.scores, holdout)]
    attack = mia_attack(*feats, folds=cfg["mia_folds"], seed=7, draws=cfg["mia_draws"])
    assert got["MIA"] == pytest.approx(attack["member_rate"], abs=1e-6)
    main = mia_metrics(forget.scores, holdout, [r["answer"] for r in rows], ["x"] * 12, cfg, 7)
    assert got["MIA"] == main["member_rate"]


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


def _vlm_holding(vlm, lm):
    """A copy of `vlm` whose decoder and LM head carry the weights of the causal LM `lm`."""
    out = copy.deepcopy(vlm)
    out.get_decoder().load_state_dict(lm.get_decoder().state_dict())
    out.get_output_embeddings().load_state_dict(lm.get_output_embeddings().state_dict())
    return out.eval()


@pytest.mark.slow
def test_rows_are_scored_as_the_main_evaluator_scores_them(tiny, tmp_path):
    """FA, RA and MIA of the text branch (`Scorer.headline`: the fine-tuned language model alone)
    equal the main evaluator's (`metrics.evaluate.evaluate_model`: the VLM holding the same
    weights) on the same text rows: one definition of each metric on both sides of finding 2."""
    from mmunlearn.metrics.evaluate import Evaluator, evaluate_model
    from mmunlearn.models.vlm import load_vlm

    data_dir, base_dir, params = tiny
    qa, profiles = pd.read_parquet(data_dir / "qa.parquet"), pd.read_parquet(data_dir / "profiles.parquet")
    (tmp_path / "data").mkdir()
    qa[qa.view == "text"].to_parquet(tmp_path / "data" / "qa.parquet")
    shutil.copy(data_dir / "profiles.parquet", tmp_path / "data" / "profiles.parquet")
    vlm, processor = load_vlm(base_dir)
    data = text.TextData(qa, profiles, processor, params)
    ft = text.train_lora(text.language_model(vlm), data.split("forget"), data.pad, params, 4, 8, seed=0)
    lm = text.merged(ft)   # knows part of the forget rows only
    ev, main = Evaluator(params, base_dir=base_dir, data_dir=tmp_path / "data"), {}
    for variant in ("icu", "fiu"):
        main[variant] = evaluate_model(ev, _vlm_holding(vlm, lm), variant, 3, kr=False)
        ours = text.Scorer(data, params, 3).headline(lm, data.setting(variant, 3, eval_retain=None))
        assert ours == pytest.approx({k: main[variant][k] for k in ("FA", "RA", "MIA")}, abs=1e-6), variant
    assert main["icu"]["mia"]["attack_draws"] == params["metrics"]["mia_draws"]


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
