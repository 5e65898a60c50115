"""Stage `assemble`: profiles -> splits -> rendered documents -> QA -> stats, written atomically."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from mmunlearn.data.profiles import generate_profiles
from mmunlearn.data.qa import build_qa
from mmunlearn.data.render import render_all
from mmunlearn.data.schema import DOMAINS, FORMS, SPLITS, VIEWS
from mmunlearn.data.splits import assign_splits
from mmunlearn.io import atomic_dir, write_json, write_parquet
from mmunlearn.params import data_scale


def build_tables(params: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Profiles (with splits) and QA, without images."""
    sc, data, seed = data_scale(params), params["data"], int(params["seed"])
    profiles = generate_profiles(sc["profiles_per_domain"], seed)
    profiles = assign_splits(profiles, sc["forget_tasks"], sc["profiles_per_task"], sc["holdout"],
                             data["fiu_ratios"], data["umu_ratios"], seed)
    return profiles, build_qa(profiles, seed)


def dataset_stats(profiles: pd.DataFrame, qa: pd.DataFrame) -> dict:
    n_images = int(profiles["images"].map(len).sum())
    static = [c for c in profiles.columns if c.startswith(("fiu_forget", "umu_forget"))]
    return {
        "profiles": len(profiles),
        "images": n_images,
        "qa": len(qa),
        "forget_tasks": int(profiles.task.max()),
        "by_domain": {d: {"profiles": int((profiles.domain == d).sum()),
                          "images": int(profiles.loc[profiles.domain == d, "images"].map(len).sum()),
                          "qa": int((qa.domain == d).sum())} for d in DOMAINS},
        "by_view": {v: int((qa.view == v).sum()) for v in VIEWS},
        "by_form": {f: int((qa.form == f).sum()) for f in FORMS},
        "by_split": {s: {"profiles": int((profiles.split == s).sum()), "qa": int((qa.split == s).sum())}
                     for s in SPLITS},
        "static_splits": {c: int(profiles[c].sum()) for c in static},
    }


def assemble(params: dict, root: str | Path = ".", progress: bool = True) -> dict:
    """Write data/profiles.parquet, data/qa.parquet, data/images/ and outputs/dataset_stats.json."""
    root = Path(root)
    profiles, qa = build_tables(params)
    records = profiles.to_dict("records")
    with atomic_dir(root / "data" / "images") as tmp:
        names = render_all(records, int(params["data"]["image_size"]), tmp,
                           workers=int(params["data"]["workers"]), progress=progress)
    profiles["images"] = names
    write_parquet(root / "data" / "profiles.parquet", profiles)
    write_parquet(root / "data" / "qa.parquet", qa)
    stats = dataset_stats(profiles, qa)
    write_json(root / "outputs" / "dataset_stats.json", stats)
    return stats
