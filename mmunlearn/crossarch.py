"""Cross-architecture branch (stage `crossarch`): the pipeline's recipe on a second VLM family.

Runs base -> finetune -> oracle -> unlearn -> evaluate for `crossarch.model` (a tiny preset such
as `tiny-blip2`, or a local checkpoint) with the methods of `crossarch.methods` on one variant
(`crossarch.variant`), all in one process, with the same library calls and params as the main
pipeline. Its rows feed `blip2_minimal_summary.json`: does the {FA, RA, MIA} vs {AD, JS}
contradiction replicate on another architecture?
"""
from __future__ import annotations

import time

from mmunlearn.io import atomic_dir, write_json
from mmunlearn.params import for_model, runtime, validate_crossarch


def branch_params(params: dict) -> dict:
    """The main params as the branch's model sees them (`params.for_model`: the main model's preset
    undone, the branch model's own preset, if any, applied), and oracles only for the branch's
    variant."""
    cfg = params["crossarch"]
    p = for_model(params, cfg["model"])
    v = cfg["variant"]
    p["oracle"] = {**p["oracle"], "fiu_ratios": [], "umu_ratios": [], "stages": []}
    if v == "icu":
        p["oracle"]["stages"] = ["last"]
    else:
        p["oracle"][f"{v}_ratios"] = [p["unlearn"][f"{v}_ratio"]]
    return p


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
    with atomic_dir(root) as tmp:
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
