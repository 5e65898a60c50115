"""A finished run's small results, copied into `results/<name>/` so they live in git.

What is copied: the seven released JSON files, `dataset_stats.json`, `sanity.json`, each method's
continual matrix (`continual/<method>.json`: A[t][i] as long rows, stage 0 = the fine-tuned model
on every task) and the run's `dvc.lock`, with a README naming the command and the commit that
reproduce them. Models, data and per-row outputs stay in the DVC cache. Not a stage dependency:
it only reads a run's outputs.

    python -m mmunlearn.release results/icu-full --command "dvc exp run -S scale=full"
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from mmunlearn.export import RELEASED_FILES
from mmunlearn.io import atomic_dir

FILES = (*RELEASED_FILES.values(), "dataset_stats.json", "sanity.json")   # from outputs/


def git_commit(root: Path) -> str:
    """HEAD of the checkout at `root`, with `+dirty` when tracked files other than the two an
    experiment rewrites (params.yaml, dvc.lock) differ from it."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                            ":!params.yaml", ":!dvc.lock"], cwd=root,
                           capture_output=True, text=True, check=True).stdout.strip()
    return head.stdout.strip() + ("+dirty" if dirty else "")


def readme(stats: dict, command: str, commit: str, methods: list[str]) -> str:
    counts = ", ".join(f"{stats[k]} {k.replace('_', ' ')}" for k in ("profiles", "images", "qa", "forget_tasks")
                       if k in stats)
    files = "\n".join(f"- `{f}`" for f in [*FILES, "dvc.lock"])
    return (f"# Results of `{command}`\n\nCommit: `{commit}`. Dataset: {counts}.\n\n"
            f"Reproduce: check out that commit, then `{command}` (the files below land in `outputs/`).\n\n"
            f"{files}\n- `continual/<method>.json`: A[t][i] (stage t, task i; stage 0 is the fine-tuned "
            f"model) as long rows, for {', '.join(methods)}\n")


def copy_release(root: Path, dest: Path, command: str, commit: str | None = None) -> list[str]:
    """The files listed in the module docstring from the run at `root` into `dest` (replaced
    whole, atomically); the relative paths written."""
    out = root / "outputs"
    missing = [f for f in FILES if not (out / f).is_file()]
    if missing or not (root / "dvc.lock").is_file():
        raise FileNotFoundError(f"{root}: not a finished run (missing {', '.join(missing) or 'dvc.lock'})")
    continual = sorted((out / "plots" / "continual").glob("*.json"))
    stats = json.loads((out / "dataset_stats.json").read_text())
    with atomic_dir(dest) as tmp:
        for f in FILES:
            shutil.copy2(out / f, tmp / f)
        shutil.copy2(root / "dvc.lock", tmp / "dvc.lock")
        (tmp / "continual").mkdir()
        for f in continual:
            shutil.copy2(f, tmp / "continual" / f.name)
        (tmp / "README.md").write_text(readme(stats, command, commit or git_commit(root),
                                              [f.stem for f in continual]))
        written = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
    return written


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--root", type=Path, default=Path("."), help="the finished run's checkout (default: here)")
    ap.add_argument("--command", required=True, help="the command that produced the run")
    ap.add_argument("--commit", help="the commit the run used (default: the checkout's HEAD)")
    args = ap.parse_args(argv)
    try:
        files = copy_release(args.root, args.dest, args.command, args.commit)
    except FileNotFoundError as e:
        sys.exit(f"error: {e}")
    print(f"{args.dest}: {len(files)} files")


if __name__ == "__main__":
    main()
