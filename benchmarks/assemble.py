"""Full-scale assembly: parallel renderer vs one process, measured side by side in one run.

Prints both wall times, the speedup, and last `full_scale_seconds: X` (target < 60 s on 2 cores).
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmunlearn.data.assemble import assemble  # noqa: E402
from mmunlearn.params import load  # noqa: E402


def timed(params: dict, workers: int) -> tuple[float, dict]:
    p = copy.deepcopy(params)
    p["data"]["workers"] = workers
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        stats = assemble(p, root=tmp, progress=False)
        return time.perf_counter() - t0, stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scale", default="full")
    ap.add_argument("--params", default=str(Path(__file__).resolve().parents[1] / "params.yaml"))
    args = ap.parse_args()
    params = load(args.params)
    params["scale"] = args.scale
    cores = os.cpu_count() or 1
    parallel, stats = timed(params, 0)
    serial, _ = timed(params, 1)
    print(f"scale: {args.scale}  profiles: {stats['profiles']}  images: {stats['images']}  "
          f"qa: {stats['qa']}  forget_tasks: {stats['forget_tasks']}")
    print(f"one_process_seconds: {serial:.2f}")
    print(f"parallel_seconds ({cores} workers): {parallel:.2f}")
    print(f"parallel_speedup: {serial / parallel:.2f}")
    print(f"full_scale_seconds: {parallel:.2f}")


if __name__ == "__main__":
    main()
