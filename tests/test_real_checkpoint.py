"""Real checkpoints: a checkpoint of LLaVA-1.5's architecture (transformers' LlavaConfig from CLIP
vision + Llama text configs, real module names, 336 px / patch 14 = 576 image tokens, llava-hf's
processor and chat template; random weights at reduced width and depth: benchmarks/llava15.py)
named by `model:` goes through every stage; its preset applies; a missing one names the command."""
from __future__ import annotations

import json

import pytest

from benchmarks import llava15
from mmunlearn.params import for_model, read_yaml, validate, validate_presets
from tests.conftest import ROOT, make_repo, run, set_param

PRESET = "llava-hf/llava-1.5-7b-hf"


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    return llava15.save(tmp_path_factory.mktemp("llava15") / "checkpoint")


def test_checkpoint_has_llava15_structure(llava_dir, smoke_dataset):
    from mmunlearn.models.encode import encode, file_images
    from mmunlearn.models.vlm import load_vlm

    model, processor = load_vlm(llava_dir)
    cfg = model.config
    assert type(model).__name__ == "LlavaForConditionalGeneration" and type(processor).__name__ == "LlavaProcessor"
    assert (cfg.vision_config.image_size, cfg.vision_config.patch_size) == (336, 14)
    assert (cfg.vision_feature_layer, cfg.vision_feature_select_strategy, cfg.projector_hidden_act) == (-2, "default", "gelu")
    names = {n for n, _ in model.named_modules()}
    assert {"model.vision_tower.encoder.layers.0.self_attn.q_proj", "model.multi_modal_projector.linear_1",
            "model.language_model.layers.1.mlp.down_proj", "lm_head"} <= names
    root, _ = smoke_dataset
    import pandas as pd

    qa = pd.read_parquet(root / "data" / "qa.parquet")
    rows = pd.concat([qa[qa.view == "text"].head(2), qa[qa.view == "vqa_full"].head(2)]).to_dict("records")
    enc = encode(processor, rows, file_images(root / "data"))
    image_id, bos = cfg.image_token_index, processor.tokenizer.bos_token_id
    assert [ids.count(image_id) for ids in enc.input_ids] == [0, 0, 576, 576]
    assert all(ids[0] == bos for ids in enc.input_ids)   # text prompts get BOS as the processor's do


def test_preset_applies_and_crossarch_sees_its_own_model(base_params):
    p = {**base_params, "model": PRESET}
    validate(p)
    validate_presets(p)
    got = for_model(p, PRESET)
    assert (got["finetune"]["lora"]["r"], got["finetune"]["lora"]["alpha"], got["finetune"]["lr"]) == (128, 256, 2e-5)
    assert got["base"]["dtype"] == "bfloat16" and got["runtime"]["gradient_checkpointing"] is True
    assert got["unlearn"]["po"] == {**base_params["unlearn"]["po"], "lr": 3e-4}
    assert got["finetune"]["batch_size"] * got["finetune"]["grad_accum"] == 32
    validate(got)
    back = for_model(got, "tiny-blip2")   # what stage crossarch gives its tiny model
    assert back["preset"] is None
    assert {k: back[k] for k in ("base", "finetune", "unlearn", "metrics", "runtime")} == \
        {k: base_params[k] for k in ("base", "finetune", "unlearn", "metrics", "runtime")}
    assert for_model(base_params, "tiny-llava")["preset"] is None


def test_base_stage_records_a_real_checkpoint_with_its_dtype(llava_dir, tmp_path, base_params):
    from mmunlearn.models.base import build_base
    from mmunlearn.models.vlm import base_dtype, base_source

    p = {**base_params, "model": str(llava_dir), "presets": {str(llava_dir): {"base": {"dtype": "bfloat16"}}}}
    validate_presets(p)
    m = build_base(for_model(p, str(llava_dir)), out_dir=tmp_path / "base", data_dir=tmp_path / "no-data",
                   metrics_path=tmp_path / "metrics.json")
    assert m == {"model": str(llava_dir), "trained": False, "dtype": "bfloat16"}
    assert sorted(f.name for f in (tmp_path / "base").iterdir()) == ["checkpoint.json"]   # nothing copied
    assert json.loads((tmp_path / "base" / "checkpoint.json").read_text())["path"] == str(llava_dir.resolve())
    assert base_source(tmp_path / "base") == llava_dir.resolve() and base_dtype(tmp_path / "base") == "bfloat16"


def test_missing_checkpoint_names_the_download_command(repo, tmp_path):
    set_param(repo, "model", PRESET)
    proc = run(["python", "-m", "stages.base"], repo, check=False, HF_HOME=str(tmp_path / "hf"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"`hf download {PRESET}`" in lines[0], lines
    assert not (repo / "models").exists()


def test_every_stage_that_reads_a_preset_section_lists_presets():
    """A preset overrides base / finetune / unlearn / metrics values, so every stage that lists one
    of those must list `presets` too, or editing the preset would not rerun it."""
    from mmunlearn.params import PRESET_SECTIONS

    stages = read_yaml(ROOT / "dvc.yaml")["stages"]
    for name, stage in stages.items():
        keys = [k for k in stage.get("params", []) if isinstance(k, str)]
        if any(k.split(".")[0] in PRESET_SECTIONS for k in keys):
            assert "presets" in keys, name


@pytest.mark.slow
def test_every_stage_runs_on_a_real_architecture_checkpoint(llava_dir, tmp_path):
    """`model:` = the local LLaVA-1.5-architecture checkpoint, with a preset keyed by its path
    (bf16 on a GPU, activation checkpointing, batch x gradient accumulation, LoRA and learning
    rates), crossarch on the same checkpoint; every stage through `dvc repro`, at a scale cut to
    the minimum (two methods, one or two unlearning steps, 16 profiles)."""
    repo = make_repo(tmp_path / "repo")
    ckpt = str(llava_dir)
    for key, value in {
        "model": ckpt, "methods": ["ga", "npo"], "crossarch.model": ckpt, "crossarch.methods": ["ga", "npo"],
        "crossarch.variant": "fiu", "data.scales.smoke": {"profiles_per_domain": 8, "forget_tasks": 2,
                                                          "profiles_per_task": 2, "holdout": 4},
        "metrics.mia_draws": 2, "metrics.relearn_steps": 1, "metrics.continual_retain_rows": 16,
        "unimodal.text.epochs.smoke": 1, "unimodal.text.max_steps.smoke": 1, "unimodal.text.eval_retain.smoke": 16,
        "presets": {ckpt: {"base": {"dtype": "bfloat16"},
                           "finetune": {"lora": {"r": 8, "alpha": 16, "dropout": 0.05}, "lr": 1.0e-3, "batch_size": 8,
                                        "grad_accum": 2, "epochs": {"smoke": 1, "small": 1, "full": 1}},
                           "unlearn": {"batch_size": 4, "ga": {"lr": 1.0e-4, "steps": 2}, "npo": {"lr": 1.0e-4, "steps": 1}},
                           "runtime": {"gradient_checkpointing": True}}},
    }.items():
        set_param(repo, key, value)
    run("git add -A && git commit -qm real", repo)
    run(["dvc", "repro"], repo)
    assert run(["dvc", "status", "--json"], repo).stdout.strip() in ("{}", "")
    record = json.loads((repo / "models" / "base" / "checkpoint.json").read_text())
    assert record == {"model": ckpt, "path": str(llava_dir.resolve()), "dtype": "bfloat16"}
    rows = json.loads((repo / "outputs" / "multimodal_results.json").read_text())
    assert sorted((r["method"], r["dataset"]) for r in rows) == sorted(
        (m, v) for m in ("ga", "npo") for v in ("icu", "fiu", "umu"))
    assert all(r["FA"] is not None and r["AD"] is not None for r in rows)
    cross = json.loads((repo / "outputs" / "crossarch" / "results.json").read_text())
    assert {r["model"] for r in cross} == {ckpt} and {r["method"] for r in cross} == {"ga", "npo"}
    adapter = json.loads((repo / "models" / "finetuned" / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"]) == (8, 16)   # the preset's LoRA, not the default
    assert (repo / "outputs" / "report" / "index.html").is_file()
    # editing the preset reruns the stages that read it
    _edit_preset(repo, ckpt)
    assert {"base", "finetune", "oracle", "unlearn@ga", "unlearn@npo"} <= set(
        json.loads(run(["dvc", "status", "--json"], repo).stdout))


def _edit_preset(repo, key: str) -> None:
    """`unlearn.ga.lr` of the preset keyed `key` (`set_param` splits keys on dots, as `-S` does)."""
    from ruamel.yaml import YAML

    yaml = YAML()
    path = repo / "params.yaml"
    data = yaml.load(path.read_text())
    data["presets"][key]["unlearn"]["ga"]["lr"] = 2.0e-4
    with open(path, "w") as fh:
        yaml.dump(data, fh)
