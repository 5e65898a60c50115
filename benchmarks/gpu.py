"""GPU benchmark on LLaVA-1.5-7B's exact architecture: random weights in the preset's dtype (bf16),
built from transformers' config classes on the GPU (`benchmarks/llava15.py`; nothing downloaded).

Measures, on the rows of `data/` (run `dvc repro validate` first) and with the preset of
`--model-id` in params.yaml (LoRA, learning rate, batch x gradient accumulation, activation
checkpointing):
- the LoRA fine-tuning step (the pipeline's `finetune.add_lora` + `models.train.train`, HF Trainer):
  seconds per optimizer step (median after the first) and peak GPU memory;
- evaluation rows/s of the batched engine (`models.engine.evaluate`, encoding included) against the
  per-sample `generate` loop (`benchmarks/per_sample.py`) on the same open-form rows, as a ratio;
- greedy generation tokens/s, batched (`engine.generate`'s batches) and the per-sample loop's time.
Random weights never answer a row exactly under teacher forcing, so the engine decodes every row
(a fine-tuned model skips most): the evaluation ratio here is a lower bound. Which fast paths
(`models.fastpath`) passed their exactness check in this dtype is printed too.

`--dry-run`: a tiny configuration of the same architecture on the CPU (tests/test_gpu_benchmark.py).
Ends with the ratios: `eval_speedup: X`, `generate_speedup: X`.
"""
from __future__ import annotations

import argparse
import inspect
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PRESET = "llava-hf/llava-1.5-7b-hf"


def fail(msg: str) -> None:
    print(f"gpu.py: {msg}", file=sys.stderr)
    sys.exit(2)


def step_timer(sync):
    """A TrainerCallback timing each optimizer step (all its accumulated batches)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.seconds: list[float] = []
            self.t0 = 0.0

        def on_step_begin(self, args, state, control, **kw):
            sync()
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            sync()
            self.seconds.append(time.perf_counter() - self.t0)

    return StepTimer()


def train_step(model, processor, rows, images, params: dict, steps: int, sync) -> dict:
    """LoRA fine-tuning for `steps` optimizer steps at the preset batch: seconds per step, tokens
    per step, peak memory."""
    import torch

    from mmunlearn.models.encode import encode
    from mmunlearn.models.finetune import add_lora, learning_rate
    from mmunlearn.models.train import TrainConfig, train

    cfg = params["finetune"]
    per_step = int(cfg["batch_size"]) * int(cfg["grad_accum"])
    chosen = [rows[i % len(rows)] for i in range(per_step * steps)]
    enc = encode(processor, chosen, images)
    model = add_lora(model, params)
    timer = step_timer(sync)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    train(model, enc, processor.tokenizer.pad_token_id,
          TrainConfig(epochs=1, lr=learning_rate(params), batch_size=int(cfg["batch_size"]),
                      grad_accum=int(cfg["grad_accum"]), seed=0), progress=False, callbacks=[timer])
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if torch.cuda.is_available() else float("nan")
    times = timer.seconds[1:] or timer.seconds
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"model": model.merge_and_unload().eval(), "step_s": statistics.median(times), "steps": len(timer.seconds),
            "per_step": per_step, "tokens_per_step": sum(map(len, enc.input_ids)) / steps,
            "peak_gib": peak, "trainable": trainable}


def generated_tokens(model, processor, enc, batch_size: int, max_new_tokens: int) -> int:
    """Greedy decoding of `enc`'s prompts in the engine's batches; the tokens generated (EOS
    included, padding after it not)."""
    import torch

    from mmunlearn.models.arch import generate
    from mmunlearn.models.encode import collate
    from mmunlearn.models.engine import length_batches
    from mmunlearn.models.scoring import model_inputs, to_model

    tok = processor.tokenizer
    n = 0
    with torch.inference_mode():
        for idx in length_batches(enc.prompt_len, batch_size):
            batch = collate(enc, idx, tok.pad_token_id, side="left", with_answer=False)
            out = generate(model, to_model(model_inputs(batch), model), max_new_tokens=max_new_tokens, do_sample=False,
                           pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            n += int((out[:, batch["input_ids"].shape[1]:] != tok.pad_token_id).sum())
    return n


def fast_parts() -> str:
    """The fast-path checks made so far and their verdicts (`models.fastpath`)."""
    from mmunlearn.models.fastpath import _CHECKED

    return ", ".join(f"{'/'.join(map(str, key[2:]))}={ok}" for key, ok in _CHECKED.items()) or "none"


def best(fn, repeats: int, sync):
    """(best seconds, last result) of `repeats` calls."""
    secs, out = float("inf"), None
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        secs = min(secs, time.perf_counter() - t0)
    return secs, out


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(ROOT), help="repository whose data/ holds the rows")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"), help="params with the preset")
    ap.add_argument("--model-id", default=PRESET, help="preset key in params.yaml")
    ap.add_argument("--rows", type=int, default=64, help="open-form rows evaluated by both sides")
    ap.add_argument("--steps", type=int, default=6, help="optimizer steps timed (the first is not counted)")
    ap.add_argument("--repeats", type=int, default=2, help="best of this many runs of each evaluation side")
    ap.add_argument("--dry-run", action="store_true", help="tiny configuration on the CPU: checks the script")
    return ap.parse_args()


def main() -> None:
    args = parse()
    import torch

    root = Path(args.root)
    for need in ("data/qa.parquet", "data/images"):
        if not (root / need).exists():
            fail(f"{root / need} not found: assemble the data first (`dvc repro validate`)")
    if not args.dry_run and not torch.cuda.is_available():
        fail("no CUDA device: run it on a GPU, or with --dry-run (tiny configuration on the CPU)")
    import pandas as pd

    from benchmarks import llava15
    from benchmarks.per_sample import generate_per_sample
    from mmunlearn.models.encode import encode, file_images
    from mmunlearn.models import vlm
    from mmunlearn.models.engine import evaluate, greedy_texts
    from mmunlearn.params import for_model, load

    params = for_model(load(args.params), args.model_id)
    if params["preset"] is None:
        fail(f"--model-id {args.model_id!r}: no preset in {args.params}")
    spec = llava15.DRY_RUN if args.dry_run else llava15.SEVEN_B
    device, dtype = vlm.device(), vlm.torch_dtype(params["base"]["dtype"])   # the stages' placement
    if args.dry_run:
        args.rows, args.steps, args.repeats = min(args.rows, 6), min(args.steps, 2), 1
        params["finetune"].update(batch_size=2, grad_accum=2)
        params["metrics"]["batch_size"] = 4
    # at most the engine's own greedy budget on both sides (`evaluate` decodes with greedy_texts' default)
    max_new = inspect.signature(greedy_texts).parameters["max_new_tokens"].default
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    qa = pd.read_parquet(root / "data" / "qa.parquet")
    images = file_images(root / "data")
    rows = qa[(qa.form != "classification") & qa.image.notna()].head(args.rows).to_dict("records")
    train_rows = qa[qa.split != "holdout"].sample(frac=1.0, random_state=0).to_dict("records")
    t0 = time.perf_counter()
    model, processor = llava15.build(spec, seed=0, dtype=dtype, device=device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: LLaVA-1.5 {'dry-run tiny' if args.dry_run else '7B'} config, random weights, {n_params / 1e6:.1f} M "
          f"parameters, {str(dtype).removeprefix('torch.')} on {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}); "
          f"built in {time.perf_counter() - t0:.1f} s")

    tr = train_step(model, processor, train_rows, images, params, args.steps, sync)
    cfg = params["finetune"]
    print(f"train_step_seconds: {tr['step_s']:.3f}  (batch {cfg['batch_size']} x accum {cfg['grad_accum']} = "
          f"{tr['per_step']} sequences, {tr['tokens_per_step']:.0f} tokens per step; {tr['steps']} steps; LoRA r "
          f"{cfg['lora']['r']}, {tr['trainable'] / 1e6:.1f} M trainable; activation checkpointing "
          f"{params['runtime']['gradient_checkpointing']})")
    print(f"train_sequences_per_second: {tr['per_step'] / tr['step_s']:.2f}")
    print(f"train_peak_memory_gib: {tr['peak_gib']:.1f}" if device.type == "cuda" else "train_peak_memory_gib: n/a (CPU)")
    model = tr["model"]

    bs = int(params["metrics"]["batch_size"])
    loop_s, loop_texts = best(lambda: generate_per_sample(model, processor, rows, images, max_new),
                              args.repeats, sync)
    engine_s, ev = best(lambda: evaluate(model, processor, rows, images, bs), args.repeats, sync)
    enc = encode(processor, rows, images)
    gen_s, n_tok = best(lambda: generated_tokens(model, processor, enc, bs, max_new), args.repeats, sync)
    same = sum(a == b for a, b in zip(ev.frame.generated, loop_texts))
    print(f"eval_rows_per_second: engine {len(rows) / engine_s:.2f}  per_sample {len(rows) / loop_s:.2f}  "
          f"({len(rows)} open-form rows, batch {bs}, {max_new} new tokens at most; best of {args.repeats})")
    print(f"fast_path_checks: {fast_parts()}")
    print(f"identical_generations: {same}/{len(rows)} (engine vs per-sample loop)")
    print(f"generate_tokens_per_second: {n_tok / gen_s:.1f}  ({n_tok} tokens in {gen_s:.2f} s, batched)")
    print(f"eval_speedup: {loop_s / engine_s:.2f}")
    print(f"generate_speedup: {loop_s / gen_s:.2f}")


if __name__ == "__main__":
    main()
