"""Stage assemble: counts, QA design, splits, determinism, parallel == serial."""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mmunlearn.data.assemble import assemble, build_tables
from mmunlearn.data.schema import FULL, MASKABLE, Layout, image_name
from mmunlearn.data.splits import static_split_name
from mmunlearn.params import data_scale


def digest_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_smoke_counts_match_params(smoke_dataset):
    root, params = smoke_dataset
    sc = data_scale(params)
    stats = json.loads((root / "outputs" / "dataset_stats.json").read_text())
    n = sc["profiles_per_domain"]
    assert stats["profiles"] == 2 * n
    assert stats["images"] == n * (10 + 9) == len(list((root / "data" / "images").glob("*.png")))
    assert stats["qa"] == 2 * n * 16
    assert stats["forget_tasks"] == sc["forget_tasks"]
    assert stats["by_domain"]["medical"]["images"] == 10 * n
    assert stats["by_split"]["forget"]["profiles"] == sc["forget_tasks"] * sc["profiles_per_task"]
    assert stats["by_split"]["holdout"]["profiles"] == sc["holdout"]
    assert sum(stats["by_view"].values()) == sum(stats["by_form"].values()) == stats["qa"]


def test_full_scale_tables_are_icu_bench_sized(base_params):
    p = copy.deepcopy(base_params)
    p["scale"] = "full"
    profiles, qa = build_tables(p)
    assert len(profiles) == 1000 and (profiles.domain == "medical").sum() == 500
    assert len(qa) == 16000
    assert profiles.task.max() == 100 and profiles[profiles.split == "forget"].task.nunique() == 100
    images = sum(len(MASKABLE[d]) + 2 for d in profiles.domain)
    assert images == 9500


def test_qa_views_and_pairs(smoke_dataset):
    root, _ = smoke_dataset
    qa = pd.read_parquet(root / "data" / "qa.parquet")
    profiles = pd.read_parquet(root / "data" / "profiles.parquet").set_index("profile_id")
    assert (qa.groupby("profile_id").size() == 16).all()
    for pair_id, group in qa.groupby("pair_id"):
        views = set(group.view)
        assert {"text", "vqa_masked"} <= views, pair_id
        assert group.answer.nunique() == 1 and group.form.nunique() == 1 and group.field.nunique() == 1
    for row in qa.itertuples():
        name = profiles.loc[row.profile_id, "name"]
        if row.view == "text":
            assert pd.isna(row.image)
            assert (name in row.question) or row.field == "name"
        else:
            assert name not in row.question  # identity must come from the image
            variant = FULL if row.view == "vqa_full" else row.field
            assert row.image == image_name(row.profile_id, variant)
        if row.form == "classification":
            opts = list(row.options)
            assert len(opts) == 4 == len(set(opts)) and row.answer in opts
        else:
            assert len(row.options) == 0
        assert row.answer == str(profiles.loc[row.profile_id, row.field])
    # answers are not always at the same option position
    pos = [list(o).index(a) for o, a in zip(qa.options, qa.answer) if len(o)]
    assert len(set(pos)) > 1


def test_splits_are_over_profiles_and_disjoint(smoke_dataset):
    root, params = smoke_dataset
    sc = data_scale(params)
    profiles = pd.read_parquet(root / "data" / "profiles.parquet")
    qa = pd.read_parquet(root / "data" / "qa.parquet")
    assert (qa.groupby("profile_id").split.nunique() == 1).all()
    forget = profiles[profiles.split == "forget"]
    sizes = forget.groupby("task").size()
    assert list(sizes.index) == list(range(1, sc["forget_tasks"] + 1))
    assert (sizes == sc["profiles_per_task"]).all()
    # each task mixes both domains
    assert (forget.groupby("task").domain.nunique() == 2).all()
    assert (profiles[profiles.split != "forget"].task == 0).all()
    trained = profiles[profiles.split != "holdout"]
    for bench, ratios in (("fiu", params["data"]["fiu_ratios"]), ("umu", params["data"]["umu_ratios"])):
        prev = set()
        for r in sorted(ratios):
            members = set(profiles.profile_id[profiles[static_split_name(bench, r)]])
            assert len(members) == max(1, round(r * len(trained)))
            assert members <= set(trained.profile_id)
            assert prev <= members  # nested
            prev = members


def test_masks_hide_only_their_field(smoke_dataset):
    root, params = smoke_dataset
    profiles = pd.read_parquet(root / "data" / "profiles.parquet")
    p = profiles.iloc[0]
    full = np.asarray(Image.open(root / "data" / image_name(p.profile_id, FULL)).convert("RGB"))
    lay = Layout(full.shape[0], p.domain)
    for field in MASKABLE[p.domain]:
        img = np.asarray(Image.open(root / "data" / image_name(p.profile_id, field)).convert("RGB"))
        x0, y0, x1, y1 = lay.field_box(field)
        assert (img[y0:y1, x0:x1] == 0).all()
        outside = np.ones(full.shape[:2], bool)
        outside[y0:y1, x0:x1] = False
        assert (img[outside] == full[outside]).all()
    assert len(p["images"]) == len(MASKABLE[p.domain]) + 2


def test_identity_cues_differ_between_profiles(smoke_dataset):
    root, _ = smoke_dataset
    profiles = pd.read_parquet(root / "data" / "profiles.parquet")
    assert profiles.cue.is_unique and profiles.name.is_unique


def test_same_params_byte_identical_and_parallel_equals_serial(smoke_dataset, tmp_path):
    root, params = smoke_dataset
    p = copy.deepcopy(params)
    p["runtime"]["data"]["workers"] = 1
    assemble(p, root=tmp_path, progress=False)
    assert digest_tree(tmp_path) == digest_tree(root)


def test_seed_changes_the_data(smoke_params, tmp_path):
    a, b = copy.deepcopy(smoke_params), copy.deepcopy(smoke_params)
    b["seed"] = 7
    pa, _ = build_tables(a)
    pb, _ = build_tables(b)
    assert not pa.drop(columns="profile_id").equals(pb.drop(columns="profile_id"))


@pytest.mark.slow
def test_full_scale_assembly_counts_on_disk(base_params, tmp_path):
    p = copy.deepcopy(base_params)
    p["scale"] = "full"
    stats = assemble(p, root=tmp_path, progress=False)
    assert (stats["profiles"], stats["images"], stats["qa"], stats["forget_tasks"]) == (1000, 9500, 16000, 100)
    assert len(list((tmp_path / "data" / "images").iterdir())) == 9500
    assert len(pd.read_parquet(tmp_path / "data" / "qa.parquet")) == 16000
