"""Unlearning methods: losses by hand, masks, and their effect on the smoke-scale model."""
from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mmunlearn.methods import get, methods
from mmunlearn.methods.base import Context
from mmunlearn.methods.po import REFUSALS
from mmunlearn.params import ParamError, method_names
from tests.conftest import run, set_param


class FixedLogits(torch.nn.Module):
    """A hand-built 'model': its next-token logits are a parameter, whatever the input."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = torch.nn.Parameter(logits.clone())

    def forward(self, input_ids=None, attention_mask=None, logits_to_keep=0, **_):
        class Out:
            pass
        out = Out()
        out.logits = self.logits[:, -logits_to_keep:] if logits_to_keep else self.logits
        return out


def batch(labels: list[list[int]]) -> dict:
    """Two sequences of length 3 (left padded) whose last positions are answer tokens."""
    lab = torch.tensor(labels)
    return {"input_ids": torch.zeros_like(lab), "attention_mask": torch.ones_like(lab), "labels": lab}


# Vocabulary of 2. The logits at position p predict the token at p+1; position 2 predicts
# nothing inside the sequence (its 9s must never count).
LOGITS = torch.tensor([[[0.5, 0.0], [1.0, 0.0], [9.0, 9.0]],
                       [[0.0, 2.0], [3.0, 0.0], [9.0, 9.0]]])
FORGET = batch([[-100, 0, 1], [-100, -100, 0]])   # answers: seq0 = (0, 1), seq1 = (0)
RETAIN = batch([[-100, -100, 1], [-100, 1, 0]])   # answers: seq0 = (1), seq1 = (1, 0)


def logp(v0: float, v1: float, tok: int) -> float:
    return [v0, v1][tok] - math.log(math.exp(v0) + math.exp(v1))


F_SEQ = [logp(0.5, 0, 0) + logp(1, 0, 1), logp(3, 0, 0)]   # per-sequence summed log-probs
F_NLL = -sum(F_SEQ) / 3                                     # mean over the 3 forget answer tokens
R_SEQ = [logp(1, 0, 1), logp(0, 2, 1) + logp(3, 0, 0)]
R_NLL = -sum(R_SEQ) / 3


def ctx_for(model, ref=None) -> Context:
    return Context(model=model, ref=ref, optimizer=None, accelerator=None, rng=np.random.default_rng(0),
                   forget_batches=None, retain_batches=None)


G = {"lr": 1e-3, "steps": 1}   # what every gradient method declares (`GradientSteps`)


def test_registry_has_the_eleven_methods():
    assert set(methods()) == set(method_names()) and len(method_names()) == 11
    for name, cls in methods().items():
        assert cls.name == name
        assert (Path(__file__).parents[1] / "mmunlearn" / "methods" / f"{name}.py").is_file()


@pytest.mark.parametrize("name, block, needle", [
    ("npo", {"lr": 1e-3, "steps": 2, "beta": -0.5}, "unlearn.npo.beta=-0.5"),
    ("npo", {"lr": 1e-3, "steps": 2}, "unlearn.npo.beta=None: missing"),
    ("ga", {"lr": 1e-3, "steps": 2, "betta": 0.1}, "unlearn.ga.betta=0.1"),
    ("ga", {"lr": 1e-3, "steps": 0}, "unlearn.ga.steps=0"),
    ("salun", {"lr": 1e-3, "steps": 2, "top_k": 1.5}, "unlearn.salun.top_k=1.5"),
    ("manu", {"top_k": 0.1, "weights": [1, 1, 1], "eps": 1e-6, "batches": 2}, "unlearn.manu.weights=[1, 1, 1]"),
    ("ga", {"lr": {"smoke": 1e-3, "small": "x", "full": 1e-3}, "steps": 2}, "unlearn.ga.lr.small='x'"),
])
def test_hyperparameters_are_checked_by_their_declaration(name, block, needle):
    with pytest.raises(ParamError) as err:
        get(name)(block)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_configure_resolves_the_scale(base_params):
    import copy

    p = copy.deepcopy(base_params)
    p["unlearn"]["ga"]["lr"] = {"smoke": 1e-2, "small": 5e-4, "full": 1e-4}
    p["scale"] = "small"
    hp = get("ga").configure(p).hp
    assert (hp.lr, hp.steps) == (5e-4, base_params["unlearn"]["ga"]["steps"])
    assert type(hp).__name__ == "GradientSteps"
    # every method's declaration accepts the repository's params.yaml
    for name in method_names():
        get(name).configure(base_params)


def test_unlearn_stage_rejects_a_bad_block_before_any_compute(repo):
    set_param(repo, "unlearn.npo.beta", -1.0)
    proc = run(["python", "-m", "stages.unlearn", "--method", "npo"], repo, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unlearn.npo.beta=-1.0" in lines[0]
    assert not (repo / "models").exists() and not (repo / "outputs").exists()


def test_ga_and_ga_diff_by_hand():
    model = FixedLogits(LOGITS)
    ga = get("ga")({"lr": 1e-3, "steps": 1}).loss(ctx_for(model), FORGET, RETAIN)
    assert ga.item() == pytest.approx(-F_NLL, abs=1e-6)
    gd = get("ga_diff")({**G, "gamma": 0.25}).loss(ctx_for(model), FORGET, RETAIN)
    assert gd.item() == pytest.approx(-F_NLL + 0.25 * R_NLL, abs=1e-6)
    ft = get("finetune_retain")(G).loss(ctx_for(model), FORGET, RETAIN)
    assert ft.item() == pytest.approx(R_NLL, abs=1e-6)


def test_npo_sign_and_per_sequence_sum_by_hand():
    model = FixedLogits(LOGITS)
    ref_logits = LOGITS.clone()
    ref_logits[0, 0] = torch.tensor([2.0, 0.0])  # ref more confident on forget seq0's first token
    ref = FixedLogits(ref_logits)
    beta = 0.5
    ref_seq = [logp(2, 0, 0) + logp(1, 0, 1), F_SEQ[1]]
    by_hand = -(2 / beta) * np.mean([math.log(1 / (1 + math.exp(beta * (s - r)))) for s, r in zip(F_SEQ, ref_seq)])
    got = get("npo")({**G, "beta": beta}).loss(ctx_for(model, ref), FORGET, RETAIN)
    assert got.item() == pytest.approx(by_hand, abs=1e-6)
    # against a batch-mean NLL implementation the value differs
    wrong = -(2 / beta) * math.log(1 / (1 + math.exp(beta * (-F_NLL - (-F_NLL)))))
    assert abs(got.item() - wrong) > 1e-3
    nd = get("npo_diff")({**G, "beta": beta, "alpha": 2.0}).loss(ctx_for(model, ref), FORGET, RETAIN)
    assert nd.item() == pytest.approx(by_hand + 2.0 * R_NLL, abs=1e-6)


def test_kl_direction_by_hand():
    model = FixedLogits(LOGITS)
    ref_logits = LOGITS.clone()
    ref_logits[1, 1] = torch.tensor([0.0, 4.0])
    ref = FixedLogits(ref_logits)

    def probs(v):
        e = np.exp(v)
        return e / e.sum()
    # retain answer slots: seq0 position 1 (predicts pos 2), seq1 positions 0 and 1
    slots = [(0, 1), (1, 0), (1, 1)]
    kls = []
    for b, pos in slots:
        p, q = probs(ref_logits[b, pos].numpy()), probs(LOGITS[b, pos].numpy())
        kls.append(float((p * np.log(p / q)).sum()))  # KL(p_ref || p_theta)
    by_hand = -F_NLL + 0.5 * np.mean(kls)
    got = get("kl")({**G, "weight": 0.5}).loss(ctx_for(model, ref), FORGET, RETAIN)
    assert got.item() == pytest.approx(by_hand, abs=1e-6)
    reverse = []
    for b, pos in slots:
        p, q = probs(ref_logits[b, pos].numpy()), probs(LOGITS[b, pos].numpy())
        reverse.append(float((q * np.log(q / p)).sum()))
    assert abs(got.item() - (-F_NLL + 0.5 * np.mean(reverse))) > 1e-3


def test_po_and_random_label_targets(smoke_dataset):
    root, _ = smoke_dataset
    from mmunlearn.data.qa import option_pools

    qa = pd.read_parquet(root / "data" / "qa.parquet")
    profiles = pd.read_parquet(root / "data" / "profiles.parquet")
    rows = qa.head(20).to_dict("records")
    rng = np.random.default_rng(0)
    refusals = get("po")(G).forget_answers(rows, {}, rng)
    assert all(r in REFUSALS for r in refusals) and len(REFUSALS) >= 5
    assert not set(REFUSALS) & set(qa.answer)  # a refusal never leaks an answer
    pools = option_pools(profiles)
    wrong = get("random_labels")(G).forget_answers(rows, pools, rng)
    for r, w in zip(rows, wrong):
        assert w != r["answer"] and w in pools[(r["domain"], r["field"])]
    model = FixedLogits(LOGITS)
    loss = get("po")(G).loss(ctx_for(model), FORGET, RETAIN)
    assert loss.item() == pytest.approx(F_NLL + R_NLL, abs=1e-6)  # NLL toward the given targets


def test_manu_zeroes_exactly_the_top_k_neurons():
    from mmunlearn.methods.manu import importance_scores, select_top
    from mmunlearn.models.vlm import apply_pruning

    torch.manual_seed(0)
    f = {"a": {m: torch.rand(10) + 0.1 for m in ("mean_abs", "frequency", "std", "rms")},
         "b": {m: torch.rand(6) + 0.1 for m in ("mean_abs", "frequency", "std", "rms")}}
    r = {"a": {m: torch.rand(10) + 0.1 for m in f["a"]}, "b": {m: torch.rand(6) + 0.1 for m in f["b"]}}
    w = [0.4, 0.3, 0.2, 0.1]
    scores = importance_scores(f, r, w, 1e-6)
    by_hand = sum(wi * (f["a"][m][3] / (r["a"][m][3] + 1e-6) - 1) for wi, m in zip(w, ("mean_abs", "frequency", "std", "rms")))
    assert scores["a"][3].item() == pytest.approx(by_hand.item(), rel=1e-6)
    picked = select_top(scores, 0.25, {})
    flat = sorted([(v.item(), n, i) for n, s in scores.items() for i, v in enumerate(s)], reverse=True)
    assert sorted((n, i) for n, idx in picked.items() for i in idx) == sorted((n, i) for _, n, i in flat[:4])

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = torch.nn.Module()
            self.mlp.down_proj = torch.nn.Linear(10, 3)
            self.other = torch.nn.Linear(10, 3)
    net = Net()
    before = copy.deepcopy(net.state_dict())
    apply_pruning(net, {"mlp.down_proj": [1, 7]})
    w_after = net.mlp.down_proj.weight
    assert (w_after[:, [1, 7]] == 0).all()
    keep = [i for i in range(10) if i not in (1, 7)]
    assert torch.equal(w_after[:, keep], before["mlp.down_proj.weight"][:, keep])
    for k in ("mlp.down_proj.bias", "other.weight", "other.bias"):
        assert torch.equal(net.state_dict()[k], before[k])


@pytest.fixture(scope="module")
def trained(smoke_pipeline):
    """Fine-tuned smoke model pieces for in-process unlearning runs."""
    repo = smoke_pipeline
    qa = pd.read_parquet(repo / "data" / "qa.parquet")
    profiles = pd.read_parquet(repo / "data" / "profiles.parquet")
    from mmunlearn.params import load

    return repo, load(repo / "params.yaml"), qa, profiles


def forget_and_retain_acc(repo: Path, adapter: Path, qa: pd.DataFrame, forget_ids) -> tuple[float, float]:
    from mmunlearn.models.encode import file_images
    from mmunlearn.models.engine import evaluate
    from mmunlearn.models.vlm import load_checkpoint

    model, processor = load_checkpoint(repo / "models" / "base", adapter)
    forget = qa[qa.profile_id.isin(forget_ids)]
    retain = qa[qa.split == "retain"]
    rows = pd.concat([forget, retain]).to_dict("records")
    ev = evaluate(model, processor, rows, file_images(repo / "data")).frame
    return float(ev.correct[:len(forget)].mean()), float(ev.correct[len(forget):].mean())


def test_methods_forget_the_task_they_unlearn(trained, tmp_path):
    from mmunlearn.methods.runner import run_sequence

    repo, params, qa, profiles = trained
    params = copy.deepcopy(params)
    task1 = sorted(profiles.profile_id[profiles.task == 1])
    fa0, ra0 = forget_and_retain_acc(repo, repo / "models" / "finetuned", qa, task1)
    assert fa0 >= 0.8
    one_task = profiles.assign(task=profiles.task.where(profiles.task <= 1, 0),
                               split=profiles.split.where(profiles.task <= 1, "holdout"))
    res = {}
    for name in ("ga", "ga_diff", "npo", "npo_diff", "mmunlearner"):
        params["unlearn"][name]["steps"] = 15
        out = tmp_path / name
        run_sequence(name, params, "icu", 0, qa, one_task, repo / "models" / "base",
                     repo / "models" / "finetuned", repo / "data", out, progress=False)
        res[name] = forget_and_retain_acc(repo, out / "task001", qa, task1)
    for name in ("ga", "ga_diff", "npo", "mmunlearner"):
        assert res[name][0] < fa0, (name, res[name], fa0)
    assert res["ga_diff"][1] > res["ga"][1], res
    assert res["npo_diff"][1] > res["ga"][1], res


def test_every_method_unlearns_one_task_through_the_runner(trained, tmp_path):
    """All eleven registered methods (gradient and gradient-free) run a task end to end and save a
    checkpoint whose weights differ from the fine-tuned adapter."""
    from safetensors.torch import load_file

    from mmunlearn.methods.base import REGISTRY
    from mmunlearn.methods.runner import run_sequence

    repo, params, qa, profiles = trained
    params = copy.deepcopy(params)
    one_task = profiles.assign(task=profiles.task.where(profiles.task <= 1, 0),
                               split=profiles.split.where(profiles.task <= 1, "holdout"))
    adapter = "adapter_model.safetensors"
    ft = load_file(repo / "models" / "finetuned" / adapter)
    for name in sorted(REGISTRY):
        if "steps" in params["unlearn"][name]:
            params["unlearn"][name]["steps"] = 1
        out = tmp_path / name
        log = run_sequence(name, params, "icu", 0, qa, one_task, repo / "models" / "base",
                           repo / "models" / "finetuned", repo / "data", out, progress=False)
        assert [e["checkpoint"] for e in log] == ["task001"], name
        got = load_file(out / "task001" / adapter)
        changed = any(not torch.equal(got[k], ft[k]) for k in ft)
        assert changed or (out / "task001" / "pruned.json").exists(), name


def test_mmunlearner_ascent_moves_only_masked_weights(trained):
    from mmunlearn.methods.base import trainable
    from mmunlearn.methods.runner import Sampler, load_trainable
    from mmunlearn.models.encode import encode, file_images

    repo, params, qa, profiles = trained
    model, processor = load_trainable(repo / "models" / "base", repo / "models" / "finetuned")
    images = file_images(repo / "data")
    rng = np.random.default_rng(0)
    pad = processor.tokenizer.pad_token_id
    forget = Sampler(encode(processor, qa[qa.task == 1].to_dict("records"), images), pad, 8, rng)
    retain = Sampler(encode(processor, qa[qa.split == "retain"].head(64).to_dict("records"), images), pad, 8, rng)

    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    opt = torch.optim.AdamW(list(trainable(model).values()), lr=1e-2)
    ctx = Context(model=model, ref=None, optimizer=opt, accelerator=acc, rng=rng,
                  forget_batches=forget, retain_batches=retain, forget_set=forget.every)
    method = get("mmunlearner")({"lr": 1e-2, "steps": 3, "tau": 1.0})
    method.begin_task(ctx)
    mask = ctx.state["grad_mask"]
    frac = sum(m.sum().item() for m in mask.values()) / sum(m.numel() for m in mask.values())
    assert 0 < frac < 1
    method.retain_step(ctx)   # unmasked, by design: AdamW now has momentum on every weight
    before = {n: p.detach().clone() for n, p in trainable(model).items()}
    for _ in range(3):
        method.ascent_step(ctx)
    moved_outside = moved_inside = 0
    for n, p in trainable(model).items():
        delta = (p.detach() - before[n]).abs()
        moved_outside += int(((delta > 0) & ~mask[n]).sum())
        moved_inside += int(((delta > 0) & mask[n]).sum())
    assert moved_outside == 0 and moved_inside > 0


def test_unknown_method_fails_before_training(smoke_pipeline, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(smoke_pipeline, repo, symlinks=True)
    set_param(repo, "methods", ["ga", "forgetall"])
    proc = run(["python", "-m", "stages.unlearn", "--method", "ga"], repo, check=False)
    assert proc.returncode == 2 and "methods='forgetall'" in proc.stderr
    assert not (repo / "models" / "unlearned").exists()


def test_editing_one_method_block_reruns_only_its_items(smoke_pipeline, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(smoke_pipeline, repo, symlinks=True)
    set_param(repo, "methods", ["ga", "npo"])
    set_param(repo, "method", "npo")
    for m in ("ga", "npo"):
        set_param(repo, f"unlearn.{m}.steps", 3)
    out = run(["dvc", "repro", "unlearn@ga", "unlearn@npo"], repo).stdout
    assert "Running stage 'unlearn@ga'" in out and "Running stage 'unlearn@npo'" in out
    stats = json.loads((repo / "outputs" / "unlearn" / "npo.json").read_text())
    assert [e["checkpoint"] for e in stats["icu"]["0"]] == ["task001", "task002", "task003"]
    for variant, ckpts in (("icu", ["task001", "task002", "task003"]), ("fiu", ["final"]), ("umu", ["final"])):
        assert sorted(p.name for p in (repo / "models" / "unlearned" / variant / "npo" / "0").iterdir()) == ckpts
    run("git add -A && git commit -qm unlearn", repo)
    out = run(["dvc", "exp", "run", "-S", "unlearn.npo.beta=0.2", "unlearn@ga", "unlearn@npo"], repo).stdout
    ran = sorted(line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage"))
    assert ran == ["unlearn@npo"], out


@pytest.mark.slow
def test_a_new_method_is_one_file_and_one_params_block(released_pipeline, tmp_path):
    """The README's example method, added to a finished smoke run: its file and its params block
    are the only edits, and its rows reach multimodal_results.json; no other method reruns."""
    import json
    import re
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(released_pipeline, repo, symlinks=True)
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    code = re.search(r"```python\n# mmunlearn/methods/ga_scaled.py\n(.*?)```", readme, re.S).group(1)
    block = re.search(r"  ga_scaled: (\{.*?\})\n", readme).group(1)
    (repo / "mmunlearn" / "methods" / "ga_scaled.py").write_text(code)
    text = (repo / "params.yaml").read_text().replace("\nunlearn:", f"\nunlearn:\n  ga_scaled: {block}", 1)
    (repo / "params.yaml").write_text(text)
    set_param(repo, "methods", [*released_pipeline_methods(repo), "ga_scaled"])
    changed = run("git status --porcelain", repo).stdout.split("\n")
    assert sorted(line[3:] for line in changed if line) == ["mmunlearn/methods/ga_scaled.py", "params.yaml"]
    out = run(["dvc", "repro"], repo).stdout
    ran = set(re.findall(r"Running stage '([^']+)'", out))
    assert "unlearn@ga_scaled" in ran and not ran & {f"unlearn@{m}" for m in released_pipeline_methods(released_pipeline)}
    rows = json.loads((repo / "outputs" / "multimodal_results.json").read_text())
    mine = [r for r in rows if r["method"] == "ga_scaled"]
    assert sorted(r["dataset"] for r in mine) == ["fiu", "icu", "umu"]
    assert all(r["FA"] is not None and r["RA"] is not None for r in mine)


def released_pipeline_methods(repo: Path) -> list[str]:
    from mmunlearn.params import read_yaml

    return list(read_yaml(repo / "params.yaml")["methods"])
