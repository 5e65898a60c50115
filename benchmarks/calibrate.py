"""Calibration sweep of the unlearning methods' defaults (the rule in the README, "Method defaults").

For each method and each learning rate of a grid, unlearn every variant (icu: all tasks in order;
fiu / umu: the static split) from the fine-tuned model of a finished run, and print FA (forget
rows) and RA (the fixed continual retain sample) beside the fine-tuned model's, and stop at the
smallest learning rate of the grid that forgets (FA drop >= --min-drop on every variant; `--all`
runs the whole grid), so the calibrated default can be read off with its RA cost.

    python benchmarks/calibrate.py --methods ga,npo --values 3e-4,1e-3,3e-3 [--steps 10]
    python benchmarks/calibrate.py --methods manu --param top_k --values 0.02,0.05,0.1

Run it in a repository where `dvc repro finetune` has run at the scale of interest (it reads
params.yaml, data/, models/base, models/finetuned); checkpoints go to a temporary directory.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path.cwd()


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="", help="comma-separated; default: params.yaml `methods`")
    ap.add_argument("--param", default="lr", help="the hyperparameter swept (default lr; e.g. top_k for manu)")
    ap.add_argument("--values", "--lrs", default="", help="comma-separated values, ascending; default: the method's own")
    ap.add_argument("--steps", type=int, default=0, help="steps per task; default: each method's own")
    ap.add_argument("--variants", default="icu,fiu,umu")
    ap.add_argument("--min-drop", type=float, default=0.2)
    ap.add_argument("--all", action="store_true",
                    help="run every learning rate; default: stop at the first that moves (the rule)")
    return ap.parse_args()


def fa_ra(ev, model, variant: str) -> tuple[float, float]:
    from mmunlearn.metrics import accuracy

    forget = ev.run(model, ev.sets(variant)["forget"]).frame.correct.to_numpy()
    retain = ev.run(model, ev.retain_subsample()).frame.correct.to_numpy()
    return accuracy(forget), accuracy(retain)


def main() -> int:
    args = parse()
    missing = [p for p in ("data/qa.parquet", "models/base", "models/finetuned") if not (ROOT / p).exists()]
    if missing:
        print(f"calibrate: missing {', '.join(missing)}: run `dvc repro finetune` here first")
        return 1
    from mmunlearn import params as P
    from mmunlearn.methods import get
    from mmunlearn.methods.runner import unlearn_variant
    from mmunlearn.metrics.evaluate import Evaluator

    params = P.load(ROOT / "params.yaml")
    methods = args.methods.split(",") if args.methods else list(params["methods"])
    variants = args.variants.split(",")
    ev = Evaluator(params)
    ft = ev.load(ROOT / "models/finetuned")
    base = {v: fa_ra(ev, ft, v) for v in variants}
    print("fine-tuned: " + "  ".join(f"{v} FA {fa:.3f} RA {ra:.3f}" for v, (fa, ra) in base.items()))
    print(f"| method | {args.param} | steps | {' | '.join(f'{v} FA | {v} RA' for v in variants)} | moved | s |")
    print("|" + "---|" * (4 + 2 * len(variants)))
    for m in methods:
        own = dataclasses.asdict(get(m).configure(params).hp)
        for value in ([float(x) for x in args.values.split(",")] if args.values else [own.get(args.param)]):
            p = copy.deepcopy(params)
            block = p["unlearn"][m] = dict(own)
            if args.param in block and value is not None:
                block[args.param] = value
            if args.steps and "steps" in block:
                block["steps"] = args.steps
            t0 = time.perf_counter()
            cells, moved = [], True
            with tempfile.TemporaryDirectory() as tmp:
                for v in variants:
                    unlearn_variant(p, m, v, out_root=tmp, progress=False)
                    root = Path(tmp) / v / m / str(p["seeds"][0])
                    fa, ra = fa_ra(ev, ev.load(sorted(d for d in root.iterdir() if d.is_dir())[-1]), v)
                    moved &= base[v][0] - fa >= args.min_drop
                    cells += [f"{fa:.3f}", f"{ra:.3f}"]
            print(f"| {m} | {block.get(args.param, '-')} | {block.get('steps', '-')} | {' | '.join(cells)} | "
                  f"{'yes' if moved else 'no'} | {time.perf_counter() - t0:.0f} |", flush=True)
            if moved and not args.all:
                break
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
