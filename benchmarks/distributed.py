"""Data-parallel stages vs one process, measured side by side in one run.

In a temporary git+DVC copy of this checkout at `scale: smoke` (`dvc repro finetune oracle` first,
not timed), runs `stages.finetune` and `stages.unlearn --method ga --no-evaluate` once in one
process and once under `torchrun --nproc_per_node N` (gloo on CPU), alternating, and prints each
wall time, the training seconds the stages record, and the N-process / 1-process ratios. A
ratio near 1 on a CPU whose cores one process already uses means the processes only split the
batches; the win is on N devices. Last line: `torchrun_over_single: X` (finetune wall ratio).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.pipeline import timed  # noqa: E402

STAGES = {"finetune": ["stages.finetune"], "unlearn ga": ["stages.unlearn", "--method", "ga", "--no-evaluate"]}


def launch(args: list[str], procs: int) -> list[str]:
    if procs == 1:
        return [sys.executable, "-m", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "-m", *args]


def recorded(repo: Path, stage: str) -> float | None:
    """The training seconds the stage wrote (finetune: `train_seconds`)."""
    path = repo / "outputs" / "finetune" / "metrics.json"
    return json.loads(path.read_text()).get("train_seconds") if stage == "finetune" else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--procs", type=int, default=2)
    args = ap.parse_args()
    if shutil.which("dvc") is None:
        sys.exit("error: dvc is not on PATH (run inside the project's environment: make setup)")
    from tests.conftest import env, make_repo

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        repo = make_repo(Path(tmp) / "repo", scale="smoke")
        e = env()
        timed(["dvc", "repro", "finetune", "oracle"], repo, e)
        for stage, cmd in STAGES.items():
            for procs in (1, args.procs):
                seconds, _ = timed(launch(cmd, procs), repo, e)
                rows.append((stage, procs, seconds, recorded(repo, stage)))
    print("| stage | processes | wall s | train s (recorded) |")
    print("|---|---|---|---|")
    for stage, procs, seconds, train in rows:
        print(f"| {stage} | {procs} | {seconds:.1f} | {'' if train is None else f'{train:.1f}'} |")
    walls = {(s, p): w for s, p, w, _ in rows}
    for stage in STAGES:
        print(f"{stage}: {args.procs} processes / 1 process wall = {walls[(stage, args.procs)] / walls[(stage, 1)]:.2f}")
    print(f"torchrun_over_single: {walls[('finetune', args.procs)] / walls[('finetune', 1)]:.2f}")


if __name__ == "__main__":
    main()
