"""KR probe construction: kinds, the paired view, new forms with valid options, no training rows reused."""
from __future__ import annotations

import pandas as pd

from mmunlearn.data.qa import option_pools
from mmunlearn.metrics.probes import probe_rows


def test_probes_cover_rephrasing_other_view_and_other_forms(smoke_dataset):
    root, _ = smoke_dataset
    qa = pd.read_parquet(root / "data" / "qa.parquet")
    profiles = pd.read_parquet(root / "data" / "profiles.parquet")
    forget = qa[qa.split == "forget"].to_dict("records")
    failed = [r for r in forget if r["view"] == "text"][:6]
    probes = probe_rows(failed, forget, profiles, option_pools(profiles), seed=0)
    trained_questions = set(qa.question)
    for row in failed:
        mine = {p["probe"]: p for p in probes if p["source"] == row["qa_id"]}
        others = {"generation", "cloze", "classification"} - {row["form"]}
        assert set(mine) == {"rephrased", "other_view"} | others, row["qa_id"]
        assert mine["rephrased"]["question"] != row["question"]
        assert mine["rephrased"]["question"] not in trained_questions
        partner = mine["other_view"]
        assert partner["view"] == "vqa_masked" and partner["image"] and partner["pair_id"] == row["pair_id"]
        for p in mine.values():
            assert p["answer"] == row["answer"] and p["profile_id"] == row["profile_id"]
        cls = mine.get("classification") or (mine["rephrased"] if row["form"] == "classification" else None)
        assert len(cls["options"]) == 4 and len(set(cls["options"])) == 4 and row["answer"] in cls["options"]
    again = probe_rows(failed, forget, profiles, option_pools(profiles), seed=0)
    assert again == probes  # seeded
