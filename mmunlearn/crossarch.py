"""Cross-architecture branch (stage `crossarch`): the pipeline's recipe on a second VLM family.

Runs base -> finetune -> oracle -> unlearn -> evaluate for `crossarch.model` (a tiny preset such
as `tiny-blip2`, or a local checkpoint) with the methods of `crossarch.methods` on one variant
(`crossarch.variant`), all in one process, with the same library calls and params as the main
pipeline. Its rows feed `blip2_minimal_summary.json`: does the {FA, RA, MIA} vs {AD, JS}
contradiction replicate on another architecture?
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

from mmunlearn.io import atomic_dir, write_json
from mmunlearn.params import validate_crossarch


def branch_params(params: dict) -> dict:
    """The main params with the branch's model, and oracles only for the branch's variant."""
    cfg = params["crossarch"]
    p = copy.deepcopy(params)
    p["model"] = cfg["model"]
    v = cfg["variant"]
    p["oracle"] = {**p["oracle"], "fiu_ratios": [], "umu_ratios": [], "stages": []}
    if v == "icu":
        p["oracle"]["stages"] = ["last"]
    else:
        p["oracle"][f"{v}_ratios"] = [p["unlearn"][f"{v}_ratio"]]
    return p


def run(params: dict, root="models/crossarch", out_path="outputs/crossarch/results.json",
        data_dir="data", progress: bool = True) -> list[dict]:
    """Rows {model, dataset, method, seed, FA, RA, MIA, AD, JS, retrained_distance} of the branch."""
    from mmunlearn.methods.runner import unlearn
    from mmunlearn.metrics.evaluate import evaluate_method
    from mmunlearn.models.base import build_base
    from mmunlearn.models.finetune import finetune, train_oracles

    cfg = validate_crossarch(params.get("crossarch"))
    p = branch_params(params)
    variant = cfg["variant"]
    rows: list[dict] = []
    t0 = time.perf_counter()
    with atomic_dir(root) as tmp:
        base, ft, oracle = tmp / "base", tmp / "finetuned", tmp / "oracle"
        m = build_base(p, out_dir=base, data_dir=data_dir, metrics_path=tmp / "metrics" / "base.json",
                       progress=progress)
        print(f"crossarch {cfg['model']}: base {m.get('public_acc')} public accuracy")
        m = finetune(p, base_dir=base, data_dir=data_dir, out_dir=ft, metrics_path=tmp / "metrics" / "finetune.json",
                     progress=progress)
        print(f"crossarch {cfg['model']}: fine-tuned trained {m['trained_acc']} holdout {m['holdout_acc']}")
        train_oracles(p, base_dir=base, data_dir=data_dir, out_root=oracle, metrics_path=tmp / "metrics" / "oracle.json")
        for method in cfg["methods"]:
            unlearn(p, method, base_dir=base, finetuned_dir=ft, data_dir=data_dir, out_root=tmp / "unlearned",
                    metrics_dir=tmp / "metrics" / "unlearn", progress=progress, variants=(variant,))
            summary = evaluate_method(p, method, unlearned_root=tmp / "unlearned", out_root=tmp / "eval",
                                      progress=progress, variants=(variant,), base_dir=base, oracle_root=oracle,
                                      data_dir=data_dir, kr=False)
            for row in summary.values():
                rows.append({"model": cfg["model"], **row})
    write_json(out_path, rows)
    print(f"crossarch {cfg['model']}: {len(rows)} rows in {time.perf_counter() - t0:.0f} s")
    return rows
