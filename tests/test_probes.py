"""KR probe construction (kinds, the paired view, new forms with valid options, no training rows
reused) and the rule shared with random labels: no label or distractor is ever the truth under
the scoring normaliser (`metrics.rows.text_match`, in either direction)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mmunlearn.data.qa import option_pools
from mmunlearn.methods.base import random_wrong_answers
from mmunlearn.metrics.probes import probe_rows
from mmunlearn.metrics.rows import text_match


def _scored_as(a: str, b: str) -> bool:
    return text_match(a, b) or text_match(b, a)


def _smoke(smoke_dataset):
    root, _ = smoke_dataset
    return pd.read_parquet(root / "data" / "qa.parquet"), pd.read_parquet(root / "data" / "profiles.parquet")


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


def test_random_labels_never_match_the_truth_on_the_smoke_dataset(smoke_dataset):
    qa, profiles = _smoke(smoke_dataset)
    rows = qa.to_dict("records")
    for seed in range(3):
        labels = random_wrong_answers(rows, option_pools(profiles), np.random.default_rng(seed))
        assert len(labels) == len(rows)
        bad = [(r["qa_id"], r["answer"], lab) for r, lab in zip(rows, labels) if _scored_as(lab, str(r["answer"]))]
        assert not bad, bad[:5]


def test_random_labels_skip_values_that_normalize_to_the_truth():
    rows = [{"domain": "medical", "field": "blood_type", "answer": "A-"},
            {"domain": "medical", "field": "name", "answer": "Smith, J."}]
    pools = {("medical", "blood_type"): ["A-", "a-", "(A-)", "A- neg", "A+"],
             ("medical", "name"): ["smith j", "SMITH, J", "J. Smith", "Dr. Smith, J.", "Jones K"]}
    rng = np.random.default_rng(0)
    # the only values the scorer cannot take for the truth: "A+" (a sign is a different type) and
    # "Jones K" ("J. Smith" normalizes to "j smith", not "smith j": it is also a valid label)
    seen = {tuple(random_wrong_answers(rows, pools, rng)) for _ in range(50)}
    assert {a for a, _ in seen} == {"A+"}
    assert {b for _, b in seen} == {"J. Smith", "Jones K"}


def test_random_labels_without_a_wrong_value_name_the_field():
    rows = [{"domain": "labor", "field": "contract_term", "answer": "1 year"}]
    with pytest.raises(ValueError, match="labor.contract_term.*'1 year'"):
        random_wrong_answers(rows, {("labor", "contract_term"): ["1 year", "1 Year.", "1 year"]},
                             np.random.default_rng(0))


def test_probe_options_never_match_the_truth(smoke_dataset):
    qa, profiles = _smoke(smoke_dataset)
    forget = qa[qa.split == "forget"].to_dict("records")
    probes = probe_rows(forget, forget, profiles, option_pools(profiles), seed=0)
    cls = [p for p in probes if p["form"] == "classification"]
    assert len(cls) >= len(forget) // 2
    for p in cls:
        answer = str(p["answer"])
        assert [o for o in p["options"] if _scored_as(o, answer)] == [answer], p["qa_id"]
        assert p["options"].count(answer) == 1


def test_reused_options_with_a_normalized_twin_of_the_answer_are_redrawn(smoke_dataset):
    qa, profiles = _smoke(smoke_dataset)
    forget = qa[qa.split == "forget"].to_dict("records")
    row = dict(next(r for r in forget if r["form"] == "classification"))
    answer = str(row["answer"])
    twin = answer.upper() + "."                            # normalizes to the answer
    row["options"] = [twin if o != answer else o for o in row["options"]][:3] + [answer]
    row["options"] = list(dict.fromkeys(row["options"]))
    probes = probe_rows([row], [row], profiles, option_pools(profiles), seed=0)
    rephrased = next(p for p in probes if p["probe"] == "rephrased")
    assert twin not in rephrased["options"] and rephrased["options"].count(answer) == 1
    assert len(rephrased["options"]) == 4
    assert [o for o in rephrased["options"] if _scored_as(o, answer)] == [answer]
    # valid dataset options are kept exactly as they are
    clean = next(r for r in forget if r["form"] == "classification")
    kept = next(p for p in probe_rows([clean], forget, profiles, option_pools(profiles), seed=0)
                if p["probe"] == "rephrased")
    assert kept["options"] == list(clean["options"])


def test_probe_options_without_a_wrong_value_name_the_field(smoke_dataset):
    qa, profiles = _smoke(smoke_dataset)
    forget = qa[qa.split == "forget"].to_dict("records")
    row = next(r for r in forget if r["form"] != "classification")
    pools = {k: [str(row["answer"])] * 5 for k in option_pools(profiles)}
    with pytest.raises(ValueError, match=f"{row['domain']}.{row['field']}"):
        probe_rows([row], forget, profiles, pools, seed=0)
