"""Stage `unlearn`: apply one method to the fine-tuned model, for every seed and variant.

Variants: `icu` (the sequential forget tasks, each starting from the previous task's model, a
checkpoint every `unlearn.save_every` tasks and always the last), `fiu` and `umu` (one static
forget split each, ratio `unlearn.fiu_ratio` / `unlearn.umu_ratio`). The trainable weights are
the fine-tuned LoRA adapter; checkpoints are adapters (plus `pruned.json` for pruning methods)
under `models/unlearned/<variant>/<method>/<seed>/<checkpoint>/`.
"""
from __future__ import annotations

import copy
import json
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mmunlearn.data.qa import option_pools
from mmunlearn.data.splits import VARIANTS, static_split_name
from mmunlearn.errors import UserError
from mmunlearn.io import atomic_dir, write_json
from mmunlearn.methods import get
from mmunlearn.methods.base import Context, StepLoss, nll_of, trainable
from mmunlearn.params import by_scale

PRUNED = "pruned.json"


def refuse_deepspeed() -> None:
    """A one-line error under `accelerate launch` with DeepSpeed (configs/accelerate/zero2.yaml is
    for fine-tuning): ZeRO partitions the gradients that the masked methods read and edit, and
    steps the optimizer inside backward, before a mask could apply."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        raise UserError("unlearning does not run under DeepSpeed (ZeRO partitions the gradients its methods read "
                        "and mask): launch it with torchrun or configs/accelerate/multi_gpu.yaml")


def variant_tasks(variant: str, params: dict, profiles: pd.DataFrame) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """([(checkpoint name, forget profile ids)], retain profile ids) of one variant."""
    trained = profiles[profiles.split != "holdout"]
    if variant == "icu":
        tasks = [(f"task{t:03d}", sorted(trained.profile_id[trained.task == t]))
                 for t in range(1, int(trained.task.max()) + 1)]
        return tasks, sorted(trained.profile_id[trained.split == "retain"])
    col = static_split_name(variant, float(params["unlearn"][f"{variant}_ratio"]))
    return [("final", sorted(trained.profile_id[trained[col]]))], sorted(trained.profile_id[~trained[col]])


class Sampler:
    """Endless seeded batches over an encoded set (reshuffled every pass).

    Data-parallel (`world` > 1, as `Unlearner` sets it under torchrun / accelerate launch): every
    rank holds the same `rng` and makes the same draws, so a call draws `world` batches' worth of
    rows and this rank keeps every `world`-th of them from `rank` on (a draw whose length is not a
    multiple of `world` repeats its first rows, as DistributedSampler pads): each rank gets its own
    per-process batch, no row twice in a step, and a step uses per-process batch x processes rows.
    `whole=True` gives every rank the same batch of `n` (statistics that must agree across ranks,
    such as MANU's and MMUnlearner's). With `world` 1 the draws are exactly the single-process
    ones. Batches land on `device` (the accelerator's) when it is not the CPU."""

    def __init__(self, enc, pad_id: int, batch_size: int, rng: np.random.Generator, rank: int = 0,
                 world: int = 1, device=None):
        self.enc, self.pad_id, self.bs, self.rng = enc, pad_id, batch_size, rng
        self.rank, self.world = int(rank), int(world)
        self.device = None if device is None or torch.device(device).type == "cpu" else torch.device(device)
        self.order: list[int] = []

    def __call__(self, n: int | None = None, whole: bool = False) -> dict:
        """The next batch of `n` sequences (default: the batch size) of this rank."""
        from mmunlearn.models.encode import collate

        n = self.bs if n is None else int(n)
        share = 1 if whole else self.world
        idx = self.draw(n * share)
        if share > 1:
            idx = (idx + idx[:-len(idx) % share])[self.rank::share]
        return self.placed(collate(self.enc, idx, self.pad_id))

    def draw(self, n: int) -> list[int]:
        """The next `n` row indices of the endless shuffled order (at most the whole set)."""
        if len(self.order) < min(n, len(self.enc)):
            self.order += [int(i) for i in self.rng.permutation(len(self.enc))]
        idx, self.order = self.order[:n], self.order[n:]
        return idx

    def every(self) -> list[dict]:
        """Every sequence once, in order, in batches of the batch size (no draw from the rng; the
        same on every rank): statistics over a whole set, such as the masks of SalUn and
        MMUnlearner."""
        from mmunlearn.models.encode import collate

        return [self.placed(collate(self.enc, list(range(s, min(s + self.bs, len(self.enc)))), self.pad_id))
                for s in range(0, len(self.enc), self.bs)]

    def placed(self, batch: dict) -> dict:
        return batch if self.device is None else {k: v.to(self.device) for k, v in batch.items()}


@dataclass
class Unlearner:
    """One method unlearning one trainable (LoRA) model task after task: the per-task step of
    `run_sequence`, which the text-only branch (`mmunlearn.unimodal.text`) runs too. `start` makes
    the frozen reference (methods with `uses_reference`), AdamW at the method's lr and accelerate's
    Accelerator; `task` unlearns one forget set; `finish` removes the method's hooks. Every draw
    (random answers, forget and retain batches) comes from `rng`, in this order.

    Under a data-parallel launch every rank runs the same loop with the same seed: `prepare` wraps
    the model, inside `StepLoss`, in DDP (each gradient step's loss is one DDP forward, its
    backward averages the gradients over the ranks) and the samplers hand each rank its shard of
    every batch (`Sampler`, `shard` = (rank, processes)); the reference model is not wrapped
    (frozen, the same on every rank). In one process `prepare` leaves the model as is."""

    method: Any
    model: Any                      # the trainable model (what `step_loss` wraps; save it as is)
    ref: Any | None
    optimizer: torch.optim.Optimizer
    accelerator: Any
    rng: np.random.Generator
    tokenizer: Any
    pools: dict
    batch_size: int
    retain: Sampler
    retain_rows: list[dict]
    state: dict = field(default_factory=dict)
    shard: tuple[int, int] = (0, 1)
    step_loss: Any = None           # StepLoss(model) as prepared by `accelerator` (DDP when distributed)

    @classmethod
    def start(cls, method, model, tokenizer, pools: dict, retain_enc, retain_rows: list[dict],
              batch_size: int, rng: np.random.Generator) -> "Unlearner":
        from accelerate import Accelerator, DistributedDataParallelKwargs

        from mmunlearn.distributed import rank, world_size

        refuse_deepspeed()
        ref = None
        if method.uses_reference:
            ref = copy.deepcopy(model).eval()
            for p in ref.parameters():
                p.requires_grad_(False)
        # LoRA weights off a batch's path (vision adapters on a text-only batch) get no gradient
        ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
        accelerator = Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=[ddp])
        if ref is not None:
            ref.to(accelerator.device)
        optimizer = torch.optim.AdamW(list(trainable(model).values()), lr=getattr(method.hp, "lr", 0.0) or 1e-3,
                                      weight_decay=0.0)
        step_loss, optimizer = accelerator.prepare(StepLoss(model), optimizer)
        shard = (rank(), world_size())
        retain = Sampler(retain_enc, tokenizer.pad_token_id, batch_size, rng, *shard, accelerator.device)
        return cls(method, model, ref, optimizer, accelerator, rng, tokenizer, pools, batch_size, retain, retain_rows,
                   shard=shard, step_loss=step_loss)

    def sampler(self, enc) -> Sampler:
        """A sampler over `enc` drawing from the run's rng, sharded like the retain batches."""
        return Sampler(enc, self.tokenizer.pad_token_id, self.batch_size, self.rng, *self.shard,
                       self.accelerator.device)

    def task(self, rows: list[dict], enc, steps: int) -> None:
        """Unlearn one forget set (`rows`, encoded with their true answers as `enc`): the method's
        targets (`forget_answers`: refusals, random labels) replace the answers, a batch of the
        true ones is kept in `state["true_forget_batch"]` and all of them are `ctx.forget_set`, then
        `Method.unlearn_task`."""
        from mmunlearn.models.encode import retarget

        answers = self.method.forget_answers(rows, self.pools, self.rng)
        forget = self.sampler(enc if answers is None else retarget(enc, self.tokenizer, answers))
        self.state["true_forget_batch"] = self.sampler(enc)()
        ctx = Context(model=self.model, ref=self.ref, optimizer=self.optimizer, accelerator=self.accelerator,
                      rng=self.rng, forget_batches=forget, retain_batches=self.retain, forget_rows=rows,
                      retain_rows=self.retain_rows, state=self.state, forget_set=self.sampler(enc).every,
                      step_loss=self.step_loss)
        self.method.unlearn_task(ctx, steps)

    def mean_loss(self, loss: torch.Tensor) -> float:
        """A loss each rank computed on its shard, averaged over the ranks (as is in one process)."""
        if self.shard[1] > 1:
            loss = self.accelerator.reduce(loss.detach(), reduction="mean")
        return float(loss)

    def finish(self) -> dict:
        """Remove the method's forward hooks (MANU); the method state (e.g. `pruned`)."""
        for h in self.state.pop("hooks", []):
            h.remove()
        return self.state


def load_trainable(base_dir: Path, finetuned_dir: Path, checkpointing: bool = False):
    """(the fine-tuned LoRA model, trainable, on the device; its processor). `checkpointing`
    (`runtime.gradient_checkpointing`): activations recomputed in the backward pass."""
    from peft import PeftModel

    from mmunlearn.models.vlm import load_base

    model, processor = load_base(base_dir)
    if checkpointing:
        model.activation_checkpointing_enable()
    model = PeftModel.from_pretrained(model, finetuned_dir, is_trainable=True)
    model.train()
    return model, processor


def run_sequence(method_name: str, params: dict, variant: str, seed: int, qa: pd.DataFrame,
                 profiles: pd.DataFrame, base_dir: Path, finetuned_dir: Path, data_dir: Path,
                 out_dir: Path | None, progress: bool = True, on_stage=None) -> list[dict]:
    """Unlearn one variant's tasks in order for one seed; checkpoints under `out_dir` (None: none
    written, as on the ranks other than 0 of a data-parallel launch, which also print nothing).
    `on_stage(seed, t, n_tasks, model, pruned)` is called after every task t (the continual
    matrix's stages, scored beside the unlearning: `branch.run_branch`)."""
    from tqdm import tqdm

    from mmunlearn.distributed import is_main

    from mmunlearn.models.encode import encode, file_images

    from mmunlearn.params import runtime_flag

    cfg = params["unlearn"]
    method = get(method_name).configure(params)
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, zlib.crc32(f"{method_name}/{variant}".encode())])
    model, processor = load_trainable(base_dir, finetuned_dir, runtime_flag(params, "gradient_checkpointing"))
    images = file_images(data_dir)
    tasks, retain_ids = variant_tasks(variant, params, profiles)
    retain_rows = qa[qa.profile_id.isin(retain_ids)].to_dict("records")
    run = Unlearner.start(method, model, processor.tokenizer, option_pools(profiles),
                          encode(processor, retain_rows, images), retain_rows, int(cfg["batch_size"]), rng)
    model, state = run.model, run.state
    log = []
    save_every = int(by_scale(cfg["save_every"], params))
    bar = tqdm(tasks, desc=f"{method_name}/{variant}/seed{seed}", unit="task", disable=not progress or not is_main())
    for t, (name, forget_ids) in enumerate(bar, start=1):
        t0 = time.perf_counter()
        rows = qa[qa.profile_id.isin(forget_ids)].to_dict("records")
        run.task(rows, encode(processor, rows, images), getattr(method.hp, "steps", 0))
        with torch.no_grad():
            model.eval()
            f_nll = run.mean_loss(nll_of(model, state["true_forget_batch"]))
            r_nll = run.mean_loss(nll_of(model, run.retain()))
            model.train()
        seconds = time.perf_counter() - t0
        entry = {"checkpoint": name, "forget_profiles": len(forget_ids), "forget_loss": round(f_nll, 4),
                 "retain_loss": round(r_nll, 4), "seconds": round(seconds, 2)}
        log.append(entry)
        if is_main():
            bar.write(f"[{method_name} {variant} seed {seed}] {name} ({t}/{len(tasks)}): "
                      f"forget loss {f_nll:.3f}  retain loss {r_nll:.3f}  {seconds:.1f} s")
        if out_dir is not None and (t % save_every == 0 or t == len(tasks)):
            save_checkpoint(model, state.get("pruned"), out_dir / name)
        if on_stage is not None:
            on_stage(seed, t, len(tasks), model, state.get("pruned"))
    run.finish()
    return log


def save_checkpoint(model, pruned: dict | None, path: Path) -> None:
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp)
        if pruned:
            (tmp / PRUNED).write_text(json.dumps(pruned, indent=1, sort_keys=True) + "\n")


def unlearn_variant(params: dict, method_name: str, variant: str, base_dir="models/base",
                    finetuned_dir="models/finetuned", data_dir="data", out_root="models/unlearned",
                    progress: bool = True, on_stage=None) -> dict[str, list[dict]]:
    """Every seed of one variant -> models/unlearned/<variant>/<method>/ (written whole or not at
    all, by rank 0 alone under a data-parallel launch); the per-task logs by seed. `on_stage`:
    `run_sequence`'s."""
    from contextlib import nullcontext

    from mmunlearn.distributed import is_main

    data_dir = Path(data_dir)
    qa = pd.read_parquet(data_dir / "qa.parquet")
    profiles = pd.read_parquet(data_dir / "profiles.parquet")
    with atomic_dir(Path(out_root) / variant / method_name) if is_main() else nullcontext() as tmp:
        return {str(seed): run_sequence(method_name, params, variant, int(seed), qa, profiles, Path(base_dir),
                                        Path(finetuned_dir), data_dir, tmp and tmp / str(seed), progress, on_stage)
                for seed in params["seeds"]}


def unlearn(params: dict, method_name: str, base_dir="models/base", finetuned_dir="models/finetuned",
            data_dir="data", out_root="models/unlearned", metrics_dir="outputs/unlearn",
            progress: bool = True, variants=VARIANTS) -> dict:
    from mmunlearn.distributed import is_main, world_size

    result = {v: unlearn_variant(params, method_name, v, base_dir, finetuned_dir, data_dir, out_root, progress)
              for v in variants}
    if is_main():
        write_json(Path(metrics_dir) / f"{method_name}.json", {"processes": world_size(), **result})
    return result
