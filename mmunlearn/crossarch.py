"""Cross-architecture branch (stage `crossarch`): the pipeline's recipe on a second VLM family.

Runs base -> finetune -> oracle -> unlearn -> evaluate for `crossarch.model` (a tiny preset such
as `tiny-blip2`, or a local checkpoint) with the methods of `crossarch.methods` on one variant
(`crossarch.variant`), all in one process, with the same library calls and params as the main
pipeline. Its rows feed `blip2_minimal_summary.json`: does the {FA, RA, MIA} vs {AD, JS}
contradiction replicate on another architecture?

Its size is `crossarch.profiles` and `crossarch.public_profiles_per_domain` per scale (null = the
main run's): a two-method check of one variant needs fewer people than the main run's eleven
methods, and the default run must not pay for a second full pipeline (`branch_data`). With a
subset the variant's forget set is kept whole, so it is a larger share of the branch's trained
people than in the main run (small: 10 of 40 instead of 10 of 100).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from mmunlearn.io import atomic_dir, write_json
from mmunlearn.params import by_scale, for_model, runtime, validate_crossarch


def branch_params(params: dict) -> dict:
    """The main params as the branch's model sees them (`params.for_model`: the main model's preset
    undone, the branch model's own preset, if any, applied), and oracles only for the branch's
    variant."""
    cfg = params["crossarch"]
    p = for_model(params, cfg["model"])
    v = cfg["variant"]
    public = by_scale(cfg["public_profiles_per_domain"], p)
    if public is not None:
        p["base"] = {**p["base"], "public_profiles_per_domain": int(public)}
    p["oracle"] = {**p["oracle"], "fiu_ratios": [], "umu_ratios": [], "stages": []}
    if v == "icu":
        p["oracle"]["stages"] = ["last"]
    else:
        p["oracle"][f"{v}_ratios"] = [p["unlearn"][f"{v}_ratio"]]
    return p


def branch_data(p: dict, variant: str, keep: int | None, data_dir, dest: Path) -> Path:
    """The branch's data folder: `data_dir` itself (`keep` None), or under `dest` the rows of every
    profile of the variant's forget set, a seeded sample of the other trained profiles up to
    `keep` profiles in all, and the holdout people in the main run's holdout:trained proportion
    (images read from `data_dir`)."""
    import numpy as np
    import pandas as pd

    from mmunlearn.io import write_parquet
    from mmunlearn.methods.runner import variant_tasks
    from mmunlearn.params import ParamError

    data_dir = Path(data_dir)
    if keep is None:
        return data_dir
    profiles = pd.read_parquet(data_dir / "profiles.parquet")
    tasks, retain = variant_tasks(variant, p, profiles)
    forget = sorted(pid for _, ids in tasks for pid in ids)
    if keep <= len(forget):
        key = "crossarch.profiles" + (f".{p['scale']}" if isinstance(p["crossarch"]["profiles"], dict) else "")
        raise ParamError(key, keep, f"the {variant} forget set alone has {len(forget)} profiles "
                                    "(keep more, or null for all)")
    holdout = sorted(profiles.profile_id[profiles.split == "holdout"])
    rng = np.random.default_rng([int(p["seed"]), 0xCA])
    n_holdout = max(1, round(len(holdout) * keep / (len(forget) + len(retain))))
    kept = {*forget, *rng.choice(retain, min(keep - len(forget), len(retain)), replace=False),
            *rng.choice(holdout, min(n_holdout, len(holdout)), replace=False)}
    dest.mkdir(parents=True)
    qa = pd.read_parquet(data_dir / "qa.parquet")
    for name, table in (("profiles", profiles), ("qa", qa)):
        write_parquet(dest / f"{name}.parquet", table[table.profile_id.isin(kept)])
    (dest / "images").symlink_to((data_dir / "images").resolve(), target_is_directory=True)
    return dest


def _train(args: tuple) -> dict:
    """Fine-tuning or the oracles of the branch (independent given the base model)."""
    from mmunlearn.models.finetune import finetune, train_oracles

    what, p, base, data_dir, out, metrics_path, progress = args
    if what == "finetune":
        return finetune(p, base_dir=base, data_dir=data_dir, out_dir=out, metrics_path=metrics_path, progress=progress)
    return train_oracles(p, base_dir=base, data_dir=data_dir, out_root=out, metrics_path=metrics_path)


def _method(args: tuple) -> dict:
    from mmunlearn.branch import run_branch

    p, method, variant, tmp, data_dir, progress = args
    return run_branch(p, method, variants=(variant,), kr=False, workers=1, progress=progress,
                      base_dir=tmp / "base", finetuned_dir=tmp / "finetuned", data_dir=data_dir,
                      unlearned_root=tmp / "unlearned", oracle_root=tmp / "oracle", eval_root=tmp / "eval",
                      metrics_dir=tmp / "metrics" / "unlearn")


def run(params: dict, root="models/crossarch", out_path="outputs/crossarch/results.json",
        data_dir="data", progress: bool = True) -> list[dict]:
    """Rows {model, dataset, method, seed, FA, RA, MIA, AD, JS, retrained_distance} of the branch.
    Fine-tuning and the oracle train side by side, then the methods run side by side
    (`mmunlearn.parallel`, `runtime.unlearn.workers`)."""
    from mmunlearn.methods import check
    from mmunlearn.models.base import build_base
    from mmunlearn.parallel import run_jobs

    cfg = validate_crossarch(params.get("crossarch"))
    check(params, cfg["methods"])
    p = branch_params(params)
    variant = cfg["variant"]
    workers = runtime(params, "unlearn.workers")
    rows: list[dict] = []
    t0 = time.perf_counter()
    with atomic_dir(root) as tmp, tempfile.TemporaryDirectory() as scratch:
        data_dir = branch_data(p, variant, by_scale(cfg["profiles"], p), data_dir, Path(scratch) / "data")
        base = tmp / "base"
        m = build_base(p, out_dir=base, data_dir=data_dir, metrics_path=tmp / "metrics" / "base.json",
                       progress=progress)
        print(f"crossarch {cfg['model']}: base {m.get('public_acc')} public accuracy")
        m, _ = run_jobs(_train, [("finetune", p, base, data_dir, tmp / "finetuned", tmp / "metrics" / "finetune.json",
                                  progress),
                                 ("oracle", p, base, data_dir, tmp / "oracle", tmp / "metrics" / "oracle.json",
                                  progress)], workers)
        print(f"crossarch {cfg['model']}: fine-tuned trained {m['trained_acc']} holdout {m['holdout_acc']}")
        summaries = run_jobs(_method, [(p, method, variant, tmp, data_dir, progress) for method in cfg["methods"]],
                             workers)
        for summary in summaries:
            for row in summary.values():
                rows.append({"model": cfg["model"], **row})
    write_json(out_path, rows)
    print(f"crossarch {cfg['model']}: {len(rows)} rows in {time.perf_counter() - t0:.0f} s")
    return rows
