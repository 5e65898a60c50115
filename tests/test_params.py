"""Params validation: one-line error naming key and value, exit 2, nothing written."""
from __future__ import annotations

import copy

import pytest

from mmunlearn.params import ParamError, data_scale, load, read_yaml, validate
from tests.conftest import ROOT, run, set_param


def test_repo_params_are_valid_and_cover_the_contract(base_params):
    validate(base_params)
    for key in ("seed", "seeds", "scale", "model", "method", "methods",
                "data", "base", "finetune", "oracle", "unlearn", "metrics", "analysis"):
        assert key in base_params
    assert base_params["scale"] == "small"
    assert set(base_params["methods"]) == {"ga", "ga_diff", "kl", "po", "npo", "npo_diff", "manu",
                                           "mmunlearner", "random_labels", "finetune_retain", "salun"}
    for m in base_params["methods"]:
        assert isinstance(base_params["unlearn"][m], dict)


def test_yaml_12_reads_exponent_floats(tmp_path):
    (tmp_path / "p.yaml").write_text("lr: 1e-5\nflag: no\n")
    data = read_yaml(tmp_path / "p.yaml")
    assert data["lr"] == pytest.approx(1e-5) and isinstance(data["lr"], float)
    assert data["flag"] == "no"


def test_full_scale_preset_is_icu_bench(base_params):
    p = copy.deepcopy(base_params)
    p["scale"] = "full"
    sc = data_scale(p)
    assert sc["profiles"] == 1000 and sc["forget_tasks"] == 100


@pytest.mark.parametrize("key,value,needle", [
    ("methods", ["ga", "bogus"], "methods='bogus'"),
    ("method", "bogus", "method='bogus'"),
    ("scale", "huge", "scale='huge'"),
    ("data.fiu_ratios", [0.01, 1.5], "data.fiu_ratios[1]=1.5"),
    ("data.umu_ratios", [0.0], "data.umu_ratios[0]=0.0"),
    ("data.scales.smoke.forget_tasks", 50, "data.scales.smoke.forget_tasks=50"),
    ("seed", 1.5, "seed=1.5"),
    ("seed", "zero", "seed='zero'"),
    ("seeds", [0, "a"], "seeds[1]='a'"),
    ("analysis.ties", "random", "analysis.ties='random'"),
    ("oracle.fiu_ratios", [0.2], "oracle.fiu_ratios[0]=0.2"),
    ("oracle.stages", [99], "oracle.stages[0]=99"),
    ("finetune.lora.dropout", 1.5, "finetune.lora.dropout=1.5"),
    ("base.epochs", {"smoke": 1, "small": 0, "full": 1}, "base.epochs.small=0"),
    ("finetune.lr", "fast", "finetune.lr='fast'"),
    ("finetune.lr", {"smoke": 1e-3, "small": 1e-3}, "finetune.lr.full=None: missing"),
    ("finetune.lora.r", {"smoke": 8, "small": 0, "full": 8}, "finetune.lora.r.small=0"),
    ("finetune.lora.alpha", {"smoke": 8, "small": 8, "full": -1}, "finetune.lora.alpha.full=-1"),
    ("runtime.unlearn.workers", -1, "runtime.unlearn.workers=-1"),
    ("runtime.metrics.workers", 1.5, "runtime.metrics.workers=1.5"),
    ("unlearn.workers", 2, "unlearn.workers=2: moved to runtime.unlearn.workers"),
    ("runtime.unlearn.threads", 2, "runtime.unlearn.threads=2: unknown runtime knob"),
    ("runtime.gradient_checkpointing", 1, "runtime.gradient_checkpointing=1: must be true or false"),
    ("finetune.grad_accum", 0, "finetune.grad_accum=0"),
    ("crossarch.profiles", {"smoke": None, "small": 1, "full": None}, "crossarch.profiles.small=1"),
    ("crossarch.public_profiles_per_domain", 0, "crossarch.public_profiles_per_domain=0"),
    ("base.dtype", "float16", "base.dtype='float16': unknown dtype"),
    ("base.dtype", "bfloat16", "base.dtype='bfloat16': model=tiny-llava is a tiny preset"),
])
def test_bad_value_is_named(base_params, key, value, needle):
    p = copy.deepcopy(base_params)
    node = p
    *parents, last = key.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    with pytest.raises(ParamError) as err:
        validate(p)
    msg = str(err.value)
    assert needle in msg and "\n" not in msg


def test_missing_top_level_key(base_params):
    p = copy.deepcopy(base_params)
    del p["analysis"]
    with pytest.raises(ParamError, match="analysis"):
        validate(p)


@pytest.mark.parametrize("stage", ["assemble", "validate"])
def test_stage_rejects_bad_params_before_writing(repo, stage):
    set_param(repo, "methods", ["ga", "not_a_method"])
    proc = run(["python", "-m", f"stages.{stage}"], repo, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "not_a_method" in lines[0] and "methods" in lines[0]
    assert not (repo / "data").exists() and not (repo / "outputs").exists()


def test_too_many_forget_profiles_fails_the_stage(repo):
    set_param(repo, "data.scales.smoke.profiles_per_task", 30)
    proc = run(["python", "-m", "stages.assemble"], repo, check=False)
    assert proc.returncode == 2
    assert "data.scales.smoke.forget_tasks=3" in proc.stderr and "no retain profile" in proc.stderr
    assert not (repo / "data").exists()


def test_load_reads_repository_params():
    assert load(ROOT / "params.yaml")["model"] == "tiny-llava"


LLAVA = "llava-hf/llava-1.5-7b-hf"


@pytest.mark.parametrize("path,value,needle", [
    ((LLAVA, "finetune", "lrr"), 1e-5, f"presets[{LLAVA}].finetune.lrr=1e-05: not a key of params.yaml"),
    ((LLAVA, "data"), {"image_size": 64}, f"presets[{LLAVA}].data="),
    ((LLAVA, "finetune", "lr"), "fast", f"presets[{LLAVA}] -> finetune.lr='fast'"),
    ((LLAVA, "finetune", "epochs"), {"smoke": 1}, f"presets[{LLAVA}] -> finetune.epochs.small=None: missing"),
    (("tiny-llava",), {"finetune": {"lr": 1e-3}}, "presets='tiny-llava'"),
])
def test_bad_preset_is_named(base_params, path, value, needle):
    from mmunlearn.params import validate_presets

    p = copy.deepcopy(base_params)
    node = p["presets"]
    *parents, last = path
    for part in parents:
        node = node[part]
    node[last] = value
    with pytest.raises(ParamError) as err:
        validate_presets(p)
    assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_a_presets_method_value_is_checked_by_the_method(base_params):
    """Method blocks are checked by the method's declaration where it runs (`Method.configure`):
    a preset's bad learning rate passes the torch-free load, and is named before any compute."""
    from mmunlearn.methods import check
    from mmunlearn.params import for_model, validate_presets

    p = copy.deepcopy(base_params)
    p["presets"][LLAVA]["unlearn"]["po"]["lr"] = -1.0
    validate_presets(p)
    with pytest.raises(ParamError, match=r"unlearn\.po\.lr=-1\.0"):
        check(for_model(p, LLAVA), ["po"])


def test_load_applies_the_selected_model_preset_only(tmp_path):
    text = (ROOT / "params.yaml").read_text().replace("model: tiny-llava ", f"model: {LLAVA} ", 1)
    (tmp_path / "params.yaml").write_text(text)
    got = load(tmp_path / "params.yaml")
    assert got["model"] == LLAVA and got["finetune"]["lr"] == 2e-5 and got["finetune"]["lora"]["r"] == 128
    tiny = read_yaml(ROOT / "params.yaml")["finetune"]["lr"]
    assert got["preset"]["model"] == LLAVA and got["preset"]["replaced"]["finetune.lr"] == tiny
    assert got["unlearn"]["npo"]["beta"] == 0.5        # what the preset does not name keeps its default
    default = load(ROOT / "params.yaml")
    assert default["preset"] is None and default["finetune"]["lr"] == tiny
