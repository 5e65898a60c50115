"""Stage validate: a clean dataset passes; each kind of corruption fails, naming the expectation."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from mmunlearn.data.schema import FULL, image_name
from mmunlearn.data.validate import validate_dataset
from tests.conftest import make_repo, run


@pytest.fixture
def copy_dataset(smoke_dataset, tmp_path) -> tuple[Path, dict]:
    root, params = smoke_dataset
    shutil.copytree(root / "data", tmp_path / "data")
    return tmp_path, params


def failed(root: Path, params: dict) -> dict[str, list[str]]:
    report = validate_dataset(params, root)
    return {c["name"]: c["offending"] for c in report.failures}


def test_clean_dataset_passes(smoke_dataset):
    root, params = smoke_dataset
    report = validate_dataset(params, root)
    assert report.success, report.failures
    assert len(report.checks) > 40


def _edit_qa(root: Path, fn) -> None:
    qa = pd.read_parquet(root / "data" / "qa.parquet")
    fn(qa)
    qa.to_parquet(root / "data" / "qa.parquet", index=False)


def test_forget_profile_moved_to_retain(copy_dataset):
    root, params = copy_dataset
    qa = pd.read_parquet(root / "data" / "qa.parquet")
    pid = qa[qa.split == "forget"].profile_id.iloc[0]

    def move(q):
        q.loc[q.profile_id == pid, "split"] = "retain"
    _edit_qa(root, move)
    bad = failed(root, params)
    assert bad["no_profile_in_forget_and_retain_or_holdout"] == [pid]
    assert pid in bad["kept_rows_have_no_task"][0]


def test_one_row_leaked_to_holdout(copy_dataset):
    root, params = copy_dataset
    qa = pd.read_parquet(root / "data" / "qa.parquet")
    row = qa[qa.split == "forget"].index[0]
    pid = qa.loc[row, "profile_id"]

    def leak(q):
        q.loc[row, ["split", "task"]] = ["holdout", 0]
    _edit_qa(root, leak)
    bad = failed(root, params)
    assert bad["no_profile_in_forget_and_retain_or_holdout"] == [pid]
    assert pid in bad["profile_in_one_split"]


def test_profile_in_two_tasks(copy_dataset):
    root, params = copy_dataset
    qa = pd.read_parquet(root / "data" / "qa.parquet")
    row = qa[qa.task == 1].index[0]
    pid = qa.loc[row, "profile_id"]

    def retask(q):
        q.loc[row, "task"] = 2
    _edit_qa(root, retask)
    assert failed(root, params)["forget_tasks_disjoint"] == [pid]


def test_blank_answer(copy_dataset):
    root, params = copy_dataset
    qa = pd.read_parquet(root / "data" / "qa.parquet")
    qid = qa.qa_id.iloc[3]

    def blank(q):
        q.loc[3, "answer"] = " "
    _edit_qa(root, blank)
    assert qid in failed(root, params)["qa_answer_not_empty"]


def test_bad_classification_options(copy_dataset):
    root, params = copy_dataset
    qa = pd.read_parquet(root / "data" / "qa.parquet")
    cls = qa[qa.form == "classification"].index
    a, b = cls[0], cls[1]
    ida, idb = qa.loc[a, "qa_id"], qa.loc[b, "qa_id"]

    def corrupt(q):
        opts = list(q.loc[a, "options"])
        q.at[a, "options"] = [opts[0], opts[0], opts[1], opts[2]]
        q.at[b, "options"] = [o for o in q.loc[b, "options"] if o != q.loc[b, "answer"]] + ["nobody"]
    _edit_qa(root, corrupt)
    bad = failed(root, params)
    assert ida in bad["classification_options_distinct"]
    assert idb in bad["classification_answer_in_options"]


def test_unmasked_image(copy_dataset):
    root, params = copy_dataset
    profiles = pd.read_parquet(root / "data" / "profiles.parquet")
    pid = profiles.profile_id.iloc[2]
    name = image_name(pid, "phone")
    shutil.copy(root / "data" / image_name(pid, FULL), root / "data" / name)
    assert failed(root, params)["vqa_masked_field_hidden"] == [name]


def test_missing_image(copy_dataset):
    root, params = copy_dataset
    profiles = pd.read_parquet(root / "data" / "profiles.parquet")
    name = profiles["images"].iloc[1][0]
    (root / "data" / name).unlink()
    bad = failed(root, params)
    assert name in bad["images_readable"]


def test_counts_must_equal_params(smoke_dataset):
    root, params = smoke_dataset
    import copy

    p = copy.deepcopy(params)
    p["data"]["scales"]["smoke"]["holdout"] += 2
    bad = failed(root, p)
    assert "split_sizes" in bad


def test_stage_fails_naming_expectation_and_blocks_pipeline(tmp_path):
    repo = make_repo(tmp_path / "repo")
    run(["dvc", "repro", "-q", "validate"], repo)
    report = json.loads((repo / "outputs" / "validation.json").read_text())
    assert report["success"] and not report["failed"]
    qa = pd.read_parquet(repo / "data" / "qa.parquet")
    pid = qa[qa.split == "forget"].profile_id.iloc[0]
    qa.loc[qa.profile_id == pid, ["split", "task"]] = ["retain", 0]
    qa.to_parquet(repo / "data" / "qa.parquet", index=False)
    proc = run(["python", "-m", "stages.validate"], repo, check=False)
    assert proc.returncode == 1
    assert "no_profile_in_forget_and_retain_or_holdout" in proc.stderr and pid in proc.stderr
    proc = run(["dvc", "repro", "validate", "--single-item"], repo, check=False)
    assert proc.returncode != 0
    assert "no_profile_in_forget_and_retain_or_holdout" in proc.stdout + proc.stderr
