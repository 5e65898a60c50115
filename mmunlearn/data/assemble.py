"""Stage `assemble`: profiles -> splits -> rendered documents -> QA -> stats, written atomically.

`data.source` = `generated` builds the ICU-Bench-style dataset below; a benchmark name
(`mmunlearn.data.sources.SOURCES`) converts the local copy at `data.source_dir` instead.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from mmunlearn.data.profiles import generate_profiles
from mmunlearn.data.qa import build_qa
from mmunlearn.data.render import render_all
from mmunlearn.data.schema import DOMAINS, FORMS, SPLITS, VIEWS
from mmunlearn.data.splits import assign_splits
from mmunlearn.errors import UserError
from mmunlearn.io import atomic_dir, write_json, write_metrics, write_parquet
from mmunlearn.params import data_scale, runtime


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
    source = params["data"].get("source", "generated")
    if source != "generated":
        return assemble_source(params, root, source)
    profiles, qa = build_tables(params)
    records = profiles.to_dict("records")
    with atomic_dir(root / "data" / "images") as tmp:
        names = render_all(records, int(params["data"]["image_size"]), tmp,
                           workers=runtime(params, "data.workers"), progress=progress)
    profiles["images"] = names
    write_parquet(root / "data" / "profiles.parquet", profiles)
    write_parquet(root / "data" / "qa.parquet", qa)
    stats = dataset_stats(profiles, qa)
    write_stats(root, stats)
    return stats


def write_stats(root: Path, stats: dict) -> None:
    """outputs/dataset_stats.json (every count) and the metrics file outputs/metrics/dataset.json
    (the four headline counts)."""
    write_json(root / "outputs" / "dataset_stats.json", stats)
    write_metrics(root / "outputs" / "metrics" / "dataset.json",
                  {k: stats[k] for k in ("profiles", "images", "qa", "forget_tasks")})


def source_path(params: dict, root: str | Path = ".") -> Path:
    """`data.source_dir` (relative paths are relative to the repository root), checked to be a
    non-empty directory; otherwise a one-line UserError naming the key and the path."""
    raw = params["data"].get("source_dir") or ""
    source = params["data"].get("source")
    if not str(raw).strip():
        raise UserError(f"params: data.source_dir={raw!r}: data.source={source} needs the path of a local copy "
                        "of the benchmark")
    path = Path(raw) if Path(raw).is_absolute() else Path(root) / raw
    if not path.is_dir():
        raise UserError(f"params: data.source_dir={raw!r}: directory {path} not found")
    if not any(path.iterdir()):
        raise UserError(f"params: data.source_dir={raw!r}: directory {path} is empty")
    return path


def assemble_source(params: dict, root: Path, source: str) -> dict:
    """Convert the benchmark copy at data.source_dir (mmunlearn.data.sources) and write the stats."""
    from mmunlearn.data.sources import convert

    stats = convert(params, source_path(params, root), root)
    write_stats(root, stats)
    return stats
