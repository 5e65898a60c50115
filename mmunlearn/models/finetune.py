"""Stages `finetune` and `oracle`: LoRA (peft) on private profiles with the HF Trainer.

`finetune` trains on forget + retain profiles (never holdout); an oracle uses the same recipe on
the profiles that remain after a forget set is removed: one per static split and per continual
checkpoint listed in `oracle`. Oracles train side by side (`mmunlearn.parallel`).

Under a data-parallel launch (`mmunlearn.distributed`) every rank trains (the HF Trainer shards
the batches: per-process `finetune.batch_size` x processes rows a step) and rank 0 alone saves,
evaluates and writes while the others wait at a barrier; the metrics record `processes`.
"""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from mmunlearn.data.splits import static_split_name
from mmunlearn.distributed import barrier, is_main, world_size
from mmunlearn.io import atomic_dir, write_json
from mmunlearn.models.train import TrainConfig
from mmunlearn.parallel import run_jobs
from mmunlearn.params import by_scale, runtime

VIEWS_REPORTED = ("text", "vqa_masked", "vqa_full")


def add_lora(model, params: dict):
    """LoRA on every module whose name ends in one of `finetune.lora.target_modules`. With the
    default Llama-style names this adapts the language model's attention and MLP projections; the
    vision side only where it shares those names (tiny-llava's CLIP q/k/v_proj). tiny-blip2's
    vision encoder (qkv, projection, fc1/fc2) and Q-Former (query/key/value, dense) have other
    names, so its adapters sit in the language model alone: its frozen Q-Former, trained in
    `base`, already passes the identity cue on (the preset memorises), and the oracle distance
    (`metrics.evaluate.target_weights`) compares exactly the adapted weights."""
    from peft import LoraConfig, get_peft_model

    import torch

    lc = params["finetune"]["lora"]
    # A regex, not a list: peft keeps a list as a set, whose saved order depends on PYTHONHASHSEED.
    targets = rf".*\.({'|'.join(sorted(lc['target_modules']))})"
    torch.manual_seed(int(params.get("seed", 0)))  # LoRA A matrices are drawn from torch's RNG
    return get_peft_model(model, LoraConfig(r=int(by_scale(lc["r"], params)),
                                            lora_alpha=float(by_scale(lc["alpha"], params)),
                                            lora_dropout=float(lc["dropout"]), target_modules=targets))


def learning_rate(params: dict) -> float:
    """`finetune.lr` at the run's scale: the rate of every LoRA trained with the fine-tuning recipe
    (fine-tuned model, oracles, the text branch, KR's relearning attack)."""
    return float(by_scale(params["finetune"]["lr"], params))


def train_lora(params: dict, base_dir: Path, rows: list[dict], data_dir: Path, progress: bool):
    """(peft model, processor, encoded rows, seconds) after LoRA training on `rows`."""
    from mmunlearn.models.encode import encode, file_images
    from mmunlearn.models.train import train
    from mmunlearn.models.vlm import load_base

    model, processor = load_base(base_dir)
    model = add_lora(model, params)
    enc = encode(processor, rows, file_images(data_dir))
    cfg = params["finetune"]
    t0 = time.perf_counter()
    train(model, enc, processor.tokenizer.pad_token_id,
          TrainConfig(epochs=by_scale(cfg["epochs"], params), lr=learning_rate(params),
                      batch_size=int(cfg["batch_size"]), grad_accum=int(cfg["grad_accum"]), seed=int(params["seed"])), progress=progress)
    return model, processor, enc, time.perf_counter() - t0


def accuracy_table(model, processor, qa: pd.DataFrame, data_dir: Path, groups: dict[str, pd.Series],
                   batch_size: int) -> dict[str, float]:
    """`{group}_acc` and `{group}_{view}_acc` for each boolean row mask in `groups`."""
    from mmunlearn.models.engine import evaluate
    from mmunlearn.models.encode import file_images

    sel = pd.concat(list(groups.values()), axis=1).any(axis=1)
    sub = qa[sel]
    ev = evaluate(model, processor, sub.to_dict("records"), file_images(data_dir), batch_size).frame
    ev.index = sub.index
    out = {}
    for name, m in groups.items():
        rows = ev[m[sel]]
        out[f"{name}_acc"] = round(float(rows.correct.mean()), 4) if len(rows) else None
        for view in VIEWS_REPORTED:
            v = rows[rows.view == view]
            out[f"{name}_{view}_acc"] = round(float(v.correct.mean()), 4) if len(v) else None
    return out


def finetune(params: dict, base_dir="models/base", data_dir="data", out_dir="models/finetuned",
             metrics_path="outputs/finetune/metrics.json", progress: bool = True) -> dict | None:
    """Train -> `out_dir` (the adapter), memorisation metrics -> `metrics_path`; the metrics (None
    on the ranks other than 0 of a data-parallel launch)."""
    data_dir = Path(data_dir)
    qa = pd.read_parquet(data_dir / "qa.parquet")
    trained = qa.split != "holdout"
    model, processor, _, seconds = train_lora(params, Path(base_dir), qa[trained].to_dict("records"),
                                              data_dir, progress)
    metrics = _finetuned_metrics(params, model, processor, qa, trained, data_dir, out_dir, seconds) if is_main() else None
    barrier()
    if metrics is not None:
        write_json(metrics_path, metrics)
    return metrics


def _finetuned_metrics(params: dict, model, processor, qa: pd.DataFrame, trained: pd.Series, data_dir: Path,
                       out_dir, seconds: float) -> dict:
    """Save the adapter, then the accuracy table of the merged model (rank 0's part of `finetune`)."""
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
    model = model.merge_and_unload()
    groups = {"trained": trained, "forget": qa.split == "forget", "retain": qa.split == "retain",
              "holdout": qa.split == "holdout"}
    metrics = accuracy_table(model, processor, qa, data_dir, groups, int(params["metrics"]["batch_size"]))
    metrics.update({"train_rows": int(trained.sum()), "train_seconds": round(seconds, 1), "processes": world_size()})
    return metrics


def oracle_jobs(params: dict, profiles: pd.DataFrame) -> list[dict]:
    """One job per static split in `oracle.fiu_ratios`/`oracle.umu_ratios` and per continual
    checkpoint in `oracle.stages` (`last` = the final task): the profiles it keeps and forgets."""
    trained = profiles[profiles.split != "holdout"]
    jobs = []
    for bench in ("fiu", "umu"):
        for r in params["oracle"][f"{bench}_ratios"]:
            col = static_split_name(bench, r)
            jobs.append({"name": col, "forget": sorted(trained.profile_id[trained[col]]),
                         "keep": sorted(trained.profile_id[~trained[col]])})
    n_tasks = int(profiles.task.max())
    for stage in params["oracle"]["stages"]:
        t = n_tasks if stage == "last" else int(stage)
        gone = (trained.split == "forget") & (trained.task <= t)
        jobs.append({"name": f"icu_task{t:03d}", "forget": sorted(trained.profile_id[gone]),
                     "keep": sorted(trained.profile_id[~gone])})
    return jobs


def _oracle_worker(args: tuple) -> dict | None:
    """Train one oracle; rank 0 saves and evaluates it (None elsewhere) while the others wait."""
    params, job, base_dir, data_dir, out_root = args
    qa = pd.read_parquet(Path(data_dir) / "qa.parquet")
    keep = qa.profile_id.isin(job["keep"])
    model, processor, _, seconds = train_lora(params, Path(base_dir), qa[keep].to_dict("records"),
                                              Path(data_dir), progress=False)
    metrics = _oracle_metrics(params, job, qa, keep, model, processor, data_dir, out_root, seconds) if is_main() else None
    barrier()
    return metrics


def _oracle_metrics(params: dict, job: dict, qa: pd.DataFrame, keep: pd.Series, model, processor, data_dir,
                    out_root, seconds: float) -> dict:
    """Save one oracle's adapter, then its accuracy on its forget and kept rows (rank 0's part)."""
    with atomic_dir(Path(out_root) / job["name"]) as tmp:
        model.save_pretrained(tmp)
    model = model.merge_and_unload()
    groups = {"forget": qa.profile_id.isin(job["forget"]), "kept": keep}
    metrics = accuracy_table(model, processor, qa, Path(data_dir), groups, int(params["metrics"]["batch_size"]))
    metrics.update({"forget_profiles": len(job["forget"]), "kept_profiles": len(job["keep"]),
                    "train_seconds": round(seconds, 1)})
    return metrics


def train_oracles(params: dict, base_dir="models/base", data_dir="data", out_root="models/oracle",
                  metrics_path="outputs/oracle/metrics.json") -> dict:
    """Every oracle of `oracle_jobs` -> `out_root/<name>/`; their metrics by name, written to
    `metrics_path` with `processes` (the world size) beside them ({} on the ranks other than 0)."""
    profiles = pd.read_parquet(Path(data_dir) / "profiles.parquet")
    jobs = oracle_jobs(params, profiles)
    tasks = [(params, job, str(base_dir), str(data_dir), str(out_root)) for job in jobs]
    if is_main():
        Path(out_root).mkdir(parents=True, exist_ok=True)
    results = run_jobs(_oracle_worker, tasks, runtime(params, "oracle.workers"), per_job=True)
    if not is_main():
        return {}
    metrics = {job["name"]: res for job, res in zip(jobs, results)}
    for job, res in zip(jobs, results):
        print(f"oracle {job['name']}: forget acc {res['forget_acc']} kept acc {res['kept_acc']} "
              f"({res['train_seconds']} s)")
    write_json(metrics_path, {"processes": world_size(), **metrics})
    return metrics
