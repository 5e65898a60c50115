"""What each fast path of the evaluation engine (`mmunlearn.models.fastpath`) saves, measured side
by side on the same model and rows: `evaluate` (teacher-forced pass + option choice + decoding of
non-exact rows) with every part, with each part alone left out, and with none (the reference
path). Prints the best of `--repeats` interleaved runs per setting and each setting's ratio to
the reference; the outputs are asserted equal. The engine keeps a part only where it saves > 10 %.

Model: models/base + models/finetuned when present (`dvc repro finetune` first), otherwise a
freshly built tiny model (random weights).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETTINGS = {"all parts": True, "no images": ("tail", "options"), "no tail": ("images", "options"),
            "no options": ("images", "tail"), "reference": False}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--root", default=str(ROOT))
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import numpy as np
    import pandas as pd
    import torch

    from benchmarks.eval import load_model
    from mmunlearn.models.encode import encode, file_images
    from mmunlearn.models.engine import evaluate

    root = Path(args.root)
    if not (root / "data" / "qa.parquet").is_file():
        print(f"fastpaths: no {root / 'data' / 'qa.parquet'}: run `dvc repro assemble` first")
        return
    torch.manual_seed(0)
    qa = pd.read_parquet(root / "data" / "qa.parquet")
    rows = qa.sample(min(args.samples, len(qa)), random_state=0).to_dict("records")
    images = file_images(root / "data")
    (model, processor), which = load_model(root, rows)
    enc = encode(processor, rows, images)
    evaluate(model, processor, rows, images, args.batch_size, enc=enc)  # checks run once, untimed
    best = dict.fromkeys(SETTINGS, float("inf"))
    out = {}
    for _ in range(args.repeats):
        for name, fast in SETTINGS.items():
            t0 = time.perf_counter()
            out[name] = evaluate(model, processor, rows, images, args.batch_size, enc=enc, fast=fast)
            best[name] = min(best[name], time.perf_counter() - t0)
    ref = out["reference"]
    for name, ev in out.items():
        assert list(ev.frame.correct) == list(ref.frame.correct), name
        np.testing.assert_allclose(ev.scores.logprob_sum, ref.scores.logprob_sum, rtol=1e-4, atol=1e-4, err_msg=name)
    print(f"model: {which}  rows: {len(rows)}  threads: {torch.get_num_threads()}  best of {args.repeats}")
    print("| setting | seconds | reference / setting |\n|---|---|---|")
    for name in SETTINGS:
        print(f"| {name} | {best[name]:.2f} | {best['reference'] / best[name]:.2f}x |")


if __name__ == "__main__":
    main()
