"""Stages base, finetune and oracle at smoke scale: the model really memorises, oracles do not."""
from __future__ import annotations

import json

from tests.conftest import ROOT, run


def test_base_is_a_saved_hf_model(smoke_pipeline):
    base = smoke_pipeline / "models" / "base"
    for f in ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json", "chat_template.jinja"):
        assert (base / f).is_file(), f
    m = json.loads((smoke_pipeline / "outputs" / "base" / "metrics.json").read_text())
    assert m["trained"] and m["public_acc"] >= 0.9


def test_finetune_memorises_trained_profiles_only(smoke_pipeline):
    m = json.loads((smoke_pipeline / "outputs" / "finetune" / "metrics.json").read_text())
    assert m["trained_text_acc"] >= 0.8 and m["trained_vqa_masked_acc"] >= 0.8, m
    assert m["holdout_text_acc"] <= 0.2 and m["holdout_vqa_masked_acc"] <= 0.2, m
    adapter = smoke_pipeline / "models" / "finetuned"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    assert not (adapter / "model.safetensors").exists()  # LoRA only, base weights untouched


def test_oracles_never_saw_their_forget_set(smoke_pipeline):
    m = json.loads((smoke_pipeline / "outputs" / "oracle" / "metrics.json").read_text())
    assert m.pop("processes") == 1                 # the world size beside the variants
    assert set(m) == {"fiu_forget05", "umu_forget10", "icu_task003"}
    for name, res in m.items():
        assert res["forget_acc"] <= 0.2, (name, res)
        assert res["kept_acc"] >= 0.8, (name, res)
        assert (smoke_pipeline / "models" / "oracle" / name / "adapter_model.safetensors").is_file()


def test_second_repro_does_nothing(smoke_pipeline):
    out = run(["dvc", "status", "finetune", "oracle"], smoke_pipeline).stdout
    assert "up to date" in out


def test_eval_benchmark_runs_on_the_finetuned_model(smoke_pipeline):
    proc = run(["python", str(ROOT / "benchmarks" / "eval.py"), "--root", str(smoke_pipeline), "--samples", "96"],
               smoke_pipeline)
    lines = proc.stdout.strip().splitlines()
    assert "identical_correctness: True  identical_generations: True" in proc.stdout
    assert lines[-1].startswith("eval_speedup: ") and float(lines[-1].split()[-1]) > 1
