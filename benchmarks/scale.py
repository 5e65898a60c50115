"""What the pipeline costs as it grows: `dvc repro` at scale small, then at scale full (or a
fraction of it), per stage, side by side in one run.

Each scale runs in its own temporary git+DVC copy of this checkout (no data, no models), from
nothing to the released files. `--fraction f` shrinks the full scale to f of its profiles, tasks
and holdout people with the same task size (4 profiles), so a task costs what it costs at full;
the stages whose work grows with the tasks (training, unlearning: linear; the continual matrix:
n(n+1)/2 cells of a fixed sample) can then be extrapolated. Prints per-stage seconds for both, the
cost ratio beside the QA-row and task ratios, and the adapters' disk use. Last lines:
`small_seconds: X`, `large_seconds: Y`, `cost_ratio: Y/X`.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def stage_seconds(repo: Path, env: dict) -> tuple[dict[str, float], float]:
    """`dvc repro` in `repo`, streamed: {stage: seconds from its start to the next one's}, total."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(["dvc", "repro"], cwd=repo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    starts: list[tuple[str, float]] = []
    tail: list[str] = []
    for line in proc.stdout:
        tail = (tail + [line])[-40:]
        if line.startswith("Running stage '"):
            now = time.perf_counter()
            if starts:
                print(f"  [{repo.name}] {starts[-1][0]}: {now - starts[-1][1]:.1f} s", file=sys.stderr, flush=True)
            starts.append((line.split("'")[1], now))
    end = time.perf_counter()
    if proc.wait():
        sys.exit(f"error: dvc repro failed in {repo} ({proc.returncode}):\n{''.join(tail)}")
    ends = [t for _, t in starts[1:]] + [end]
    return {name: t1 - t for (name, t), t1 in zip(starts, ends)}, end - t0


def counts(repo: Path) -> dict:
    import json

    stats = json.loads((repo / "outputs" / "dataset_stats.json").read_text())
    return {k: stats[k] for k in ("profiles", "images", "qa", "forget_tasks") if k in stats}


def disk_gb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e9


def run_scale(tmp: Path, name: str, fraction: float, env: dict, keep: Path | None) -> dict:
    from tests.conftest import make_repo, set_param
    from mmunlearn.params import read_yaml

    scale = "small" if name == "small" else "full"
    repo = make_repo(tmp / name, scale=scale)
    if scale == "full" and fraction != 1.0:
        full = read_yaml(ROOT / "params.yaml")["data"]["scales"]["full"]
        for key in ("profiles_per_domain", "forget_tasks", "holdout"):
            set_param(repo, f"data.scales.full.{key}", max(1, round(full[key] * fraction)))
    seconds, total = stage_seconds(repo, env)
    out = {"stages": seconds, "total": total, "counts": counts(repo),
           "models_gb": disk_gb(repo / "models"), "unlearned_gb": disk_gb(repo / "models" / "unlearned")}
    if keep is not None:
        shutil.copytree(repo / "outputs", keep / name / "outputs", dirs_exist_ok=True)
        shutil.copy2(repo / "dvc.lock", keep / name / "dvc.lock")
    return out


def table(small: dict, large: dict) -> list[str]:
    names = list(dict.fromkeys([*small["stages"], *large["stages"]]))
    lines = [f"{'stage':<28} {'small s':>9} {'large s':>9} {'ratio':>7}"]
    for n in names:
        a, b = small["stages"].get(n), large["stages"].get(n)
        ratio = f"{b / a:7.1f}" if a and b else f"{'-':>7}"
        lines.append(f"{n:<28} {a or 0:9.1f} {b or 0:9.1f} {ratio}")
    lines.append(f"{'total':<28} {small['total']:9.1f} {large['total']:9.1f} {large['total'] / small['total']:7.1f}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fraction", type=float, default=1.0,
                    help="share of the full scale's profiles, tasks and holdout (same task size); default 1")
    ap.add_argument("--keep", type=Path, help="copy each run's outputs/ and dvc.lock here")
    ap.add_argument("--small-only", action="store_true",
                    help="only the default run (scale small): its per-stage seconds and total")
    ap.add_argument("--large-only", action="store_true",
                    help="only scale full (x --fraction): its per-stage seconds, total and disk use")
    args = ap.parse_args()
    if not 0 < args.fraction <= 1:
        sys.exit(f"error: --fraction {args.fraction} is not in (0, 1]")
    if shutil.which("dvc") is None and not (Path(sys.executable).parent / "dvc").is_file():
        sys.exit("error: dvc is not installed in this environment (make setup)")
    from tests.conftest import env

    with tempfile.TemporaryDirectory() as tmp:
        if args.small_only or args.large_only:
            name = "small" if args.small_only else "large"
            one = run_scale(Path(tmp), name, args.fraction, env(), args.keep)
            print("\n".join(f"{n:<28} {s:9.1f}" for n, s in one["stages"].items()))
            print(f"counts: {one['counts']}  models_gb: {one['models_gb']:.2f} "
                  f"(unlearned checkpoints {one['unlearned_gb']:.2f})")
            print(f"{name}_seconds: {one['total']:.1f}")
            return
        small = run_scale(Path(tmp), "small", 1.0, env(), args.keep)
        large = run_scale(Path(tmp), "large", args.fraction, env(), args.keep)
    print(f"large = scale full x {args.fraction:g} (task size unchanged)")
    print("\n".join(table(small, large)))
    for key in small["counts"]:
        a, b = small["counts"][key], large["counts"].get(key)
        print(f"{key}: small {a}  large {b}  ratio {b / a:.1f}" if a and b else f"{key}: small {a}  large {b}")
    print(f"models_gb: small {small['models_gb']:.2f}  large {large['models_gb']:.2f} "
          f"(unlearned checkpoints {large['unlearned_gb']:.2f})")
    print(f"small_seconds: {small['total']:.1f}")
    print(f"large_seconds: {large['total']:.1f}")
    print(f"cost_ratio: {large['total'] / small['total']:.1f}")


if __name__ == "__main__":
    main()
