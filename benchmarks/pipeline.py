"""End-to-end smoke pipeline vs a no-op `dvc repro`, measured side by side in one run.

In a temporary git+DVC copy of this checkout (no data, no models, `scale: smoke`), times the
whole `dvc repro` from nothing to the released files, then a second `dvc repro` that must find
everything up to date, and prints per-stage seconds (from DVC's output), both totals and their
ratio. Last lines: `smoke_seconds: X` (target < 180 s) and `noop_seconds: Y` (target < 3 s).
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(cmd: list[str], cwd: Path, env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"error: {' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return seconds, proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--methods", default="", help="comma-separated subset of `methods` (default: all)")
    args = ap.parse_args()
    from tests.conftest import env, make_repo, set_param

    with tempfile.TemporaryDirectory() as tmp:
        repo = make_repo(Path(tmp) / "repo", scale="smoke")
        if args.methods:
            methods = args.methods.split(",")
            set_param(repo, "methods", methods)
            set_param(repo, "method", methods[0])
        e = env()
        full, out = timed(["dvc", "repro"], repo, e)
        stages = re.findall(r"Running stage '([^']+)'", out)
        noop, out2 = timed(["dvc", "repro"], repo, e)
        if "Running stage" in out2:
            sys.exit("error: the second `dvc repro` ran stages:\n" + out2)
        missing = [f for f in ("multimodal_results.json", "analysis_results.json", "README.md")
                   if not (repo / "outputs" / f).is_file()]
        if missing:
            sys.exit(f"error: the pipeline did not write {missing}")
    print(f"stages_run: {len(stages)}")
    print(f"smoke_repro_seconds: {full:.1f}  noop_repro_seconds: {noop:.2f}  ratio: {full / noop:.0f}x")
    print(f"smoke_seconds: {full:.1f}")
    print(f"noop_seconds: {noop:.2f}")


if __name__ == "__main__":
    main()
