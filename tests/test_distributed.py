"""Data-parallel launches (torchrun / accelerate launch, 2 CPU processes on gloo): the rank helpers,
sharded batches, the process pool stepping aside, one DDP step whose loss makes two passes, and
(slow) the finetune and unlearn stages under a launcher against their single-process runs."""
from __future__ import annotations

import json
import os
import shutil
import sys
import time

import numpy as np
import pytest
import torch

from mmunlearn import distributed
from mmunlearn.methods.runner import Sampler
from mmunlearn.models.encode import Encoded
from tests.conftest import ROOT, run

BIN = os.path.dirname(sys.executable)


def toy_encoded(n: int) -> Encoded:
    """n sequences [prompt 1000 + i, answer i]: the answer token names the row."""
    return Encoded(input_ids=[[1000 + i, i] for i in range(n)], prompt_len=[1] * n, image=[None] * n)


def rows_of(batch: dict) -> list[int]:
    return batch["input_ids"][:, -1].tolist()


def test_helpers_in_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert (distributed.world_size(), distributed.rank(), distributed.is_main()) == (1, 0, True)
    distributed.barrier()   # nothing to wait for
    with distributed.session(5):
        assert not torch.distributed.is_initialized()


def test_one_process_sampler_draws_exactly_as_before():
    """world 1 (the default) = the single-process draws, whatever `whole` says."""
    enc = toy_encoded(10)
    a, b = Sampler(enc, 0, 4, np.random.default_rng(3)), Sampler(enc, 0, 4, np.random.default_rng(3), 0, 1)
    got_a = [rows_of(a()) for _ in range(5)] + [rows_of(a(3))]
    got_b = [rows_of(b(whole=i % 2 == 0)) for i in range(5)] + [rows_of(b(3))]
    assert got_a == got_b
    rng = np.random.default_rng(3)
    order = [int(i) for i in rng.permutation(10)] + [int(i) for i in rng.permutation(10)]
    assert got_a[:2] == [order[:4], order[4:8]]


def test_ranks_split_each_batch_without_duplicates():
    """Two ranks with the same seed: each call, rank 0 and rank 1 hold the two halves of the draw
    that one process with a batch of 2 x 3 rows makes (within a pass over the set no row twice);
    `whole=True` hands both the same batch."""
    enc = toy_encoded(12)
    ranks = [Sampler(enc, 0, 3, np.random.default_rng(7), r, 2) for r in (0, 1)]
    single = Sampler(enc, 0, 6, np.random.default_rng(7))
    for _ in range(4):
        r0, r1 = (rows_of(s()) for s in ranks)
        assert len(r0) == len(r1) == 3 and not set(r0) & set(r1)
        assert sorted(r0 + r1) == sorted(rows_of(single()))
    w0, w1 = (rows_of(s(whole=True)) for s in ranks)
    assert w0 == w1 and len(w0) == 3


def test_a_short_draw_is_padded_so_every_rank_gets_rows():
    """3 rows over 2 ranks: the draw is padded with its first row (DistributedSampler's way)."""
    enc = toy_encoded(3)
    r0, r1 = (rows_of(Sampler(enc, 0, 4, np.random.default_rng(0), r, 2)()) for r in (0, 1))
    assert len(r0) == len(r1) == 2 and set(r0 + r1) == {0, 1, 2}


def test_the_process_pool_steps_aside_under_a_launch(monkeypatch):
    from mmunlearn.parallel import plan, run_jobs

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert plan(0, 5, per_job=True) == (1, torch.get_num_threads())
    assert run_jobs(_pid, [1, 2, 3]) == [os.getpid()] * 3


def _pid(_job) -> int:
    return os.getpid()


class TwoPath(torch.nn.Module):
    """A toy LM: logits from token embeddings, plus an 'image' weight used only when a batch has
    pixel values (as LoRA on a vision tower is used only by batches with images)."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(8, 8)
        self.img = torch.nn.Linear(2, 8)

    def forward(self, input_ids=None, attention_mask=None, pixel_values=None, logits_to_keep=0, **_):
        h = self.emb(input_ids)
        if pixel_values is not None:
            h = h + self.img(pixel_values).unsqueeze(1)

        class Out:
            pass
        out = Out()
        out.logits = h[:, -logits_to_keep:] if logits_to_keep else h
        return out


def _ddp_step(rank: int, port: int, out: str) -> None:
    """One GA-Diff step on 2 gloo ranks: the forget pass uses the image weight, the retain pass
    (the last one) does not; through `StepLoss` in DDP both ranks end with the same weights."""
    import torch.distributed as dist

    from mmunlearn.methods import get
    from mmunlearn.methods.base import Context, StepLoss

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = TwoPath()
    ddp = torch.nn.parallel.DistributedDataParallel(StepLoss(model), find_unused_parameters=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ids = torch.tensor([[1 + rank, 2, 3], [4, 5 + rank, 6]])
    labels = torch.tensor([[-100, 2, 3], [-100, -100, 6]])
    forget = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
              "pixel_values": torch.ones(2, 2) * (rank + 1)}
    retain = {k: v for k, v in forget.items() if k != "pixel_values"}

    class Acc:
        @staticmethod
        def backward(loss):
            loss.backward()
    ctx = Context(model=model, ref=None, optimizer=opt, accelerator=Acc(), rng=np.random.default_rng(0),
                  forget_batches=lambda: forget, retain_batches=lambda: retain, step_loss=ddp)
    for _ in range(2):
        get("ga_diff")(get("ga_diff").Hyper(lr=0.1, steps=1, gamma=1.0)).step(ctx)
    torch.save({n: p.detach() for n, p in model.named_parameters()}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_a_ddp_step_whose_loss_makes_two_passes(tmp_path):
    """DDP finds a step's weights from its last forward: two forwards of a DDP-wrapped model, the
    first alone using a weight, fail ('mark a variable ready only once'); one `StepLoss` forward
    does not, and the ranks' weights stay equal (gradients averaged)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_ddp_step, args=(port, str(tmp_path)), nprocs=2)
    w0, w1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert all(torch.equal(w0[n], w1[n]) for n in w0)
    torch.manual_seed(0)
    init = TwoPath()
    assert not torch.equal(w0["img.weight"], init.img.weight.detach())   # the image weight moved


# ---- stages under a launcher (slow: 2 gloo processes on the smoke pipeline) ------------------------

def torchrun(repo, *args: str, check: bool = True):
    """`torchrun --nproc_per_node 2 -m <args>` in `repo`: (completed process, wall seconds)."""
    t0 = time.perf_counter()
    proc = run([f"{BIN}/torchrun", "--standalone", "--nproc_per_node", "2", "-m", *args], repo, check=check)
    return proc, time.perf_counter() - t0


@pytest.mark.slow
def test_accelerate_launch_with_the_shipped_cpu_config_starts_two_gloo_ranks(tmp_path):
    """configs/accelerate/cpu2.yaml starts 2 processes (`--cpu` would start one) and the stage
    session gives them one gloo group. Each rank writes its own file: the ranks share one stdout,
    where their prints may interleave."""
    script = tmp_path / "ranks.py"
    script.write_text("import pathlib, sys\n"
                      "import torch.distributed as dist\n"
                      "from mmunlearn import distributed\n"
                      "with distributed.session(5):\n"
                      "    r = distributed.rank()\n"
                      "    pathlib.Path(sys.argv[1], f'rank{r}.txt').write_text("
                      "f'rank {r} of {distributed.world_size()} {dist.get_backend()}')\n")
    proc = run([f"{BIN}/accelerate", "launch", "--config_file", str(ROOT / "configs" / "accelerate" / "cpu2.yaml"),
                str(script), str(tmp_path)], ROOT, PYTHONPATH=str(ROOT))
    assert sorted(f.read_text() for f in tmp_path.glob("rank*.txt")) == \
        ["rank 0 of 2 gloo", "rank 1 of 2 gloo"], proc.stdout + proc.stderr


@pytest.mark.slow
def test_finetune_under_torchrun(smoke_pipeline, tmp_path):
    """2 processes: exit 0, the summary printed once, `processes: 2`, memorisation thresholds met,
    the adapter written, training within 3x the single-process time of the fixture's run."""
    single = json.loads((smoke_pipeline / "outputs" / "finetune" / "metrics.json").read_text())
    repo = tmp_path / "repo"
    shutil.copytree(smoke_pipeline, repo, symlinks=True)
    (repo / "models" / "finetuned" / "adapter_model.safetensors").unlink()
    proc, _ = torchrun(repo, "stages.finetune")
    assert proc.stdout.count("finetune: trained") == 1 and "2 processes" in proc.stdout, proc.stdout
    m = json.loads((repo / "outputs" / "finetune" / "metrics.json").read_text())
    assert m["processes"] == 2 and single["processes"] == 1
    assert m["trained_text_acc"] >= 0.8 and m["trained_vqa_masked_acc"] >= 0.8, m
    assert m["holdout_text_acc"] <= 0.2 and m["holdout_vqa_masked_acc"] <= 0.2, m
    assert (repo / "models" / "finetuned" / "adapter_model.safetensors").is_file()
    assert m["train_seconds"] <= 3 * single["train_seconds"], (m["train_seconds"], single["train_seconds"])


def forget_acc(repo, adapter, rows) -> float:
    from mmunlearn.models.encode import file_images
    from mmunlearn.models.engine import evaluate
    from mmunlearn.models.vlm import load_checkpoint

    model, processor = load_checkpoint(repo / "models" / "base", adapter)
    return float(evaluate(model, processor, rows, file_images(repo / "data")).frame.correct.mean())


@pytest.mark.slow
def test_unlearn_under_torchrun_matches_the_single_process_run(smoke_pipeline, tmp_path):
    """`unlearn --method ga` (unlearning only) with 1 and 2 processes: the 2-process run exits 0,
    prints each task line once, records `processes: 2`, lowers FA on every variant as the single
    run does, within 3x its wall time."""
    import pandas as pd

    from mmunlearn.methods.runner import variant_tasks
    from mmunlearn.params import load

    repo = tmp_path / "repo"
    shutil.copytree(smoke_pipeline, repo, symlinks=True)
    t0 = time.perf_counter()
    run(["python", "-m", "stages.unlearn", "--method", "ga", "--no-evaluate"], repo)
    t_single = time.perf_counter() - t0
    shutil.move(repo / "models" / "unlearned", tmp_path / "single")
    one = json.loads((repo / "outputs" / "unlearn" / "ga.json").read_text())
    proc, t_two = torchrun(repo, "stages.unlearn", "--method", "ga", "--no-evaluate")
    two = json.loads((repo / "outputs" / "unlearn" / "ga.json").read_text())
    assert (one["processes"], two["processes"]) == (1, 2)
    assert proc.stdout.count("[ga icu seed 0] task001") == 1, proc.stdout
    assert t_two <= 3 * t_single, (t_two, t_single)
    params, qa = load(repo / "params.yaml"), pd.read_parquet(repo / "data" / "qa.parquet")
    profiles = pd.read_parquet(repo / "data" / "profiles.parquet")
    for variant in ("icu", "fiu", "umu"):
        tasks, _ = variant_tasks(variant, params, profiles)
        rows = qa[qa.profile_id.isin([p for _, ids in tasks for p in ids])].to_dict("records")
        last = f"{variant}/ga/0/{tasks[-1][0]}"
        fa = {"finetuned": forget_acc(repo, repo / "models" / "finetuned", rows),
              "single": forget_acc(repo, tmp_path / "single" / last, rows),
              "two": forget_acc(repo, repo / "models" / "unlearned" / last, rows)}
        assert fa["two"] < fa["finetuned"] - 0.2 and fa["single"] < fa["finetuned"] - 0.2, (variant, fa)
