"""benchmarks/gpu.py: the dry run (a tiny LLaVA-1.5 configuration on the CPU) goes through every
measurement of the GPU run and prints every figure; missing inputs are one line."""
from __future__ import annotations

import sys

from tests.conftest import ROOT, run

FIGURES = ("train_step_seconds:", "train_sequences_per_second:", "train_peak_memory_gib:", "eval_rows_per_second:",
           "fast_path_checks:", "identical_generations:", "generate_tokens_per_second:", "eval_speedup:",
           "generate_speedup:")


def test_dry_run_prints_every_figure(smoke_dataset):
    root, _ = smoke_dataset
    out = run([sys.executable, "benchmarks/gpu.py", "--dry-run", "--root", str(root)], ROOT).stdout
    lines = [line for line in out.splitlines() if line.split(" ")[0] in FIGURES]
    assert [line.split(" ")[0] for line in lines] == list(FIGURES), out
    values = {line.split(" ")[0]: line.split(" ")[1] for line in lines}
    assert float(values["eval_speedup:"]) > 0 and float(values["generate_speedup:"]) > 0
    assert values["identical_generations:"].split("/")[1] == "6"
    assert "LoRA r 128" in out   # the llava-1.5-7b preset's recipe


def test_missing_inputs_say_so_in_one_line(tmp_path):
    proc = run([sys.executable, "benchmarks/gpu.py", "--dry-run", "--root", str(tmp_path)], ROOT, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "qa.parquet not found" in lines[0]
