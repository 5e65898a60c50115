"""The DVC pipeline itself: stages, caching, experiments, atomic outputs."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from mmunlearn.data import assemble as assemble_mod
from tests.conftest import run


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
