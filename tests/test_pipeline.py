"""The DVC pipeline itself: stages, caching, experiments, atomic outputs."""
from __future__ import annotations

import json
import re
import shutil
import time

import pandas as pd
import pytest

from mmunlearn.data import assemble as assemble_mod
from tests.conftest import ROOT, run, set_param


def test_repro_then_noop(repo, smoke_params):
    n = 2 * smoke_params["data"]["scales"]["smoke"]["profiles_per_domain"]
    stages = run(["dvc", "stage", "list"], repo).stdout
    assert "assemble" in stages and "validate" in stages
    run(["dvc", "repro", "validate"], repo)
    stats = json.loads((repo / "outputs" / "dataset_stats.json").read_text())
    assert stats["profiles"] == n
    out = run(["dvc", "repro", "validate"], repo).stdout
    assert "didn't change" in out and "Running stage" not in out
    metrics = json.loads(run(["dvc", "metrics", "show", "--json"], repo).stdout)
    assert find(metrics, "outputs/metrics/dataset.json")["data"]["qa"] == n * smoke_params["data"]["qa_per_profile"]
    assert find(metrics, "outputs/metrics/validation.json")["data"] == {"ok": True, "n_failed": 0}


def find(tree, key):
    """First value under `key` anywhere in a nested dict."""
    if isinstance(tree, dict):
        if key in tree:
            return tree[key]
        for v in tree.values():
            hit = find(v, key)
            if hit is not None:
                return hit
    return None


def test_exp_run_changes_only_what_params_touch(repo):
    run(["dvc", "repro", "validate"], repo)
    run("git add -A && git commit -qm data", repo)
    proc = run(["dvc", "exp", "run", "-S", "data.scales.smoke.holdout=4", "validate"], repo)
    assert "Running stage 'assemble'" in proc.stdout
    profiles = pd.read_parquet(repo / "data" / "profiles.parquet")
    assert (profiles.split == "holdout").sum() == 4
    assert json.loads((repo / "outputs" / "validation.json").read_text())["success"]


def test_killed_render_leaves_nothing_half_written(tmp_path, smoke_params, monkeypatch):
    real = assemble_mod.render_all

    def dying(profiles, size, out_dir, workers=0, progress=False):
        real(profiles[:3], size, out_dir, workers=1)
        raise KeyboardInterrupt

    monkeypatch.setattr(assemble_mod, "render_all", dying)
    with pytest.raises(KeyboardInterrupt):
        assemble_mod.assemble(smoke_params, root=tmp_path, progress=False)
    assert list((tmp_path / "data").iterdir()) == []
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_full_scale_exp_run_assemble(repo):
    run("git add -A && git commit -qm x", repo, check=False)
    run(["dvc", "exp", "run", "-S", "scale=full", "assemble"], repo)
    stats = json.loads((repo / "outputs" / "dataset_stats.json").read_text())
    assert (stats["profiles"], stats["images"], stats["qa"], stats["forget_tasks"]) == (1000, 9500, 16000, 100)
    assert len(list((repo / "data" / "images").iterdir())) == 9500
    assert len(pd.read_parquet(repo / "data" / "qa.parquet")) == 16000
    assert len(pd.read_parquet(repo / "data" / "profiles.parquet")) == 1000


def wait_for_queue(repo, timeout: float = 1800) -> str:
    """Poll `dvc queue status` until no experiment is queued or running; its last table."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status = run(["dvc", "queue", "status"], repo).stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            return status
        time.sleep(5)
    raise AssertionError(f"queue still busy after {timeout} s:\n{status}")


@pytest.mark.slow
def test_queued_experiments_fan_out_and_reuse_every_unchanged_stage(released_pipeline, tmp_path):
    """Two queued focus methods run side by side (`dvc queue start -j 2`) in temporary workspaces
    made from the committed repository: each gets its own params and metrics, and only `selected`,
    the one stage that reads `method`, runs; the rest comes out of the shared cache."""
    from mmunlearn.export.selected import select

    repo = tmp_path / "repo"
    shutil.copytree(released_pipeline, repo, symlinks=True)
    methods = ("ga", "kl")
    for m in methods:
        run(["dvc", "exp", "run", "--queue", "-n", f"focus-{m}", "-S", f"method={m}"], repo)
    run(["dvc", "queue", "start", "-j", "2"], repo)
    try:
        status = wait_for_queue(repo)
    finally:
        run(["dvc", "queue", "stop"], repo, check=False)
    assert status.count("Success") == 2, status
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    exps = {e["name"]: e["revs"][0]["data"] for base in shown for e in base.get("experiments") or []}
    for m in methods:
        data = exps[f"focus-{m}"]
        assert data["params"]["params.yaml"]["data"]["method"] == m
        metrics = data["metrics"]["outputs/selected/metrics.json"]["data"]
        select({"method": m}, eval_root=repo / "outputs" / "eval",
               weights_path=repo / "outputs" / "analysis" / "uqs_weights.json", out_dir=tmp_path / m)
        assert metrics == json.loads((tmp_path / m / "metrics.json").read_text())
        log = run(["dvc", "queue", "logs", f"focus-{m}"], repo).stdout
        assert re.findall(r"Running stage '([^']+)'", log) == ["selected"], log
        for stage in ("assemble", "base", "finetune", "oracle", f"unlearn@{m}", "analyze"):
            assert f"Stage '{stage}' didn't change, skipping" in log, log
    assert exps["focus-ga"]["metrics"] != exps["focus-kl"]["metrics"]


def readme_block(language: str, first_line: str) -> str:
    """The README's fenced `language` block that starts with `first_line`."""
    blocks = re.findall(rf"```{language}\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return next(b for b in blocks if b.startswith(first_line))


@pytest.mark.slow
def test_a_new_method_and_metric_flow_into_the_released_rows(released_pipeline, tmp_path):
    """The README's two extension examples, applied as written to a finished smoke run: the
    method's file plus its params block, and the metric's file. Nothing else changes (git
    agrees); `dvc repro` runs the new method's item and leaves the training stages alone, and
    every row of every method -- the new one included -- in `multimodal_results.json` and in the
    text branch carries the new column."""
    from ruamel.yaml import YAML

    repo = tmp_path / "repo"
    shutil.copytree(released_pipeline, repo, symlinks=True)
    method = readme_block("python", "# mmunlearn/methods/ga_scaled.py")
    (repo / "mmunlearn" / "methods" / "ga_scaled.py").write_text(method)
    metric = readme_block("python", "# mmunlearn/metrics/columns/fa_text.py")
    (repo / "mmunlearn" / "metrics" / "columns" / "fa_text.py").write_text(metric)
    block = YAML(typ="safe").load(readme_block("yaml", "# params.yaml: add ga_scaled").split("\n", 1)[1])
    set_param(repo, "unlearn.ga_scaled", {**block["ga_scaled"], "steps": 2})
    set_param(repo, "methods", ["ga", "ga_scaled"])
    set_param(repo, "method", "ga_scaled")
    changed = run(["git", "status", "--porcelain", "--untracked-files=all"], repo).stdout.split("\n")
    assert sorted(line[3:] for line in changed if line) == [
        "mmunlearn/methods/ga_scaled.py", "mmunlearn/metrics/columns/fa_text.py", "params.yaml"]
    log = run(["dvc", "repro"], repo).stdout
    assert "Running stage 'unlearn@ga_scaled'" in log, log
    for stage in ("assemble", "validate", "base", "finetune", "oracle"):
        assert f"Stage '{stage}' didn't change, skipping" in log, log
    rows = json.loads((repo / "outputs" / "multimodal_results.json").read_text())
    assert {r["method"] for r in rows} == {"ga", "ga_scaled"}
    assert all(0.0 <= r["FA_text"] <= 1.0 for r in rows)
    # the text-only rows over the same columns, through the same registry
    text = json.loads((repo / "outputs" / "unimodal" / "results.json").read_text())
    text_rows = [r for r in text if str(r["dataset"]).startswith("text_")]
    assert text_rows and all("FA_text" in r for r in text_rows)
    assert {r["method"] for r in text_rows} == {"ga", "ga_scaled"}
