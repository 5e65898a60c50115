"""Benchmark loaders (data.source = mllmu | umu | fiu): tiny copies in each benchmark's own file
layout are converted into our data contract and pass the validation suite."""
from __future__ import annotations

import copy
import hashlib
import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmunlearn.data.assemble import assemble
from mmunlearn.data.schema import FULL, MASKABLE, image_name
from mmunlearn.data.sources import SOURCES, fiu
from mmunlearn.data.splits import static_split_name
from mmunlearn.data.validate import validate_dataset
from mmunlearn.errors import UserError
from mmunlearn.params import DATA_SOURCES, ParamError, validate
from tests.conftest import ROOT, run, set_param

SIZE = 64
COLORS = ["red", "green", "blue", "orange", "purple", "cyan", "magenta", "yellow", "brown", "gray",
          "pink", "olive", "navy", "teal"]
CITIES = ["Arden", "Belmont", "Corvin", "Dunmore", "Elston", "Fairhaven", "Glenrock", "Harrow"]
JOBS = ["baker", "pilot", "nurse", "judge", "miner", "tailor", "clerk", "poet"]


def png(i: int, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30 + i), COLORS[i % len(COLORS)]).save(buf, format=fmt)
    return buf.getvalue()


def opts(answer: str, pool: list[str], shift: int) -> tuple[dict, str]:
    """Options A-D holding `answer` at position shift % 4; returns (options, answer letter)."""
    others = [v for v in pool if v != answer][:3]
    values = others[:shift % 4] + [answer] + others[shift % 4:]
    return dict(zip("ABCD", values)), "ABCD"[shift % 4]


# ---- MLLMU-Bench: forget_<N>/ + retain_<100-N>/ parquet, nested task structs, image bytes --------
def mllmu_row(i: int) -> dict:
    city, job = CITIES[i % 8], JOBS[(i + 3) % 8]
    city_opts, city_letter = opts(city, CITIES, i)
    job_opts, job_letter = opts(job, JOBS, i + 1)
    return {
        "image": {"bytes": png(i), "path": f"{i}.png"},
        "ID": str(i),
        "biography": json.dumps({"Name": f"Person {i}", "Born": city, "Employment": job}),
        "question": "Who is this?", "answer": f"Person {i}",
        "Classification_Task": {
            "Image_Textual_Questions": [
                {"Question": "Where was this person born?", "Options": city_opts, "Correct_Answer": city_letter},
                {"Question": "What is this person's job?", "Options": job_opts, "Correct_Answer": job_letter}],
            "Pure_Text_Questions": [
                {"Question": f"Where was Person {i} born?", "Options": city_opts, "Correct_Answer": city_letter},
                # answers differ from the image question at the same position: not a pair
                {"Question": f"Where does Person {i} live?", "Options": city_opts, "Correct_Answer": city_letter}],
        },
        "Mask_Task": [
            {"Question": "This person works as a __.", "Ground_Truth": job, "Type": "Image_Textual"},
            {"Question": f"Person {i} works as a __.", "Ground_Truth": job, "Type": "Pure_Text"}],
        "Generation_Task": [
            {"Question": "What does this person do?", "Ground_Truth": f"This person is a {job}.",
             "Type": "Image_Textual"},
            {"Question": f"What does Person {i} do?", "Ground_Truth": f"Person {i} is a {job}.", "Type": "Pure_Text"}],
    }


def write_mllmu(src: Path, n_forget: int = 4, n: int = 12) -> Path:
    for name, ids in (("forget_5", range(n_forget)), ("retain_95", range(n_forget, n))):
        (src / name).mkdir(parents=True)
        pd.DataFrame([mllmu_row(i) for i in ids]).to_parquet(src / name / "train-00000-of-00001.parquet")
    return src


# ---- UMU-Bench: forget_<N>/ + retain_<100-N>/ parquet, tasks as Python-literal strings ----------
def umu_row(i: int) -> dict:
    city, job = CITIES[i % 8], JOBS[(i + 5) % 8]
    city_opts, letter = opts(city, CITIES, i)
    name = f"Umu {i}"
    return {
        "ID": f"u{i:03d}",
        "image": {"bytes": png(i), "path": None},
        "Classify": str({
            "unimodal": {"0": {"question": f"Where was {name} born?", "options": city_opts,
                               "answer": f"{letter}. {city}"}},
            "muitimodal": {"0": {"question": "Where was the person in the image born?", "options": city_opts,
                                 "answer": f"{letter}. {city}"}}}),
        "Cloze": str({
            "unimodal": {"0": {"question": f"{name} works as a ____.", "answer": f"{job}."}},
            "muitimodal": {"0": {"question": "The person in the image works as a ____.", "answer": f"{job}."}}}),
        "Generation": str({
            "unimodal": {"0": {"question": f"What is {name}'s job?", "answer": f"{name} is a {job}."},
                         "1": {"question": f"Where does {name} live?", "answer": f"{name} lives in {city}."}},
            "muitimodal": {"0": {"question": "What is this person's job?", "answer": f"This person is a {job}."}}}),
        "MM_QA": str({"question": {"0": "Who?"}, "answer": {"0": name}}),
        "UM_QA": str({"question": {"0": "Who?"}, "answer": {"0": name}}),
    }


def write_umu(src: Path, n_forget: int = 4, n: int = 12) -> Path:
    for name, ids in (("forget_10", range(n_forget)), ("retain_90", range(n_forget, n))):
        (src / name).mkdir(parents=True)
        pd.DataFrame([umu_row(i) for i in ids]).to_parquet(src / name / "train-00000-of-00001.parquet")
    return src


# ---- FIUBench: dataset/full.json (JSON lines), dataset/split.json, face images -----------------
def write_fiu(src: Path, n: int = 12) -> Path:
    data = src / "dataset"
    (data / "images").mkdir(parents=True)
    lines = []
    for i in range(n):
        uid = str(1000 + i)
        (data / "images" / f"{uid}.jpg").write_bytes(png(i, "JPEG"))
        lines.append(json.dumps({
            "unique_id": uid, "image_path": f"./dataset/images/{uid}.jpg", "caption": "A face.",
            "qa_list": [
                {"question": "What is this person's blood type?", "answer": ["A+", "B-", "O+"][i % 3],
                 "paraphrased_question": ["Which blood type does this person have?"],
                 "paraphrased_answer": "It is A+.", "perturbed_answer": ["B+", "O-", "AB+"]},
                {"question": "Which condition was this person treated for?", "answer": f"condition {i}"}],
        }))
    (data / "full.json").write_text("\n".join(lines) + "\n")
    ids = [str(1000 + i) for i in range(n)]
    (data / "split.json").write_text(json.dumps({"forget1": ids[:1], "forget5": ids[:2], "forget10": ids[:4],
                                                 "retain5": ids[2:]}))
    return src


WRITERS = {"mllmu": write_mllmu, "umu": write_umu, "fiu": write_fiu}


def source_params(smoke_params: dict, name: str, src: Path) -> dict:
    p = copy.deepcopy(smoke_params)
    p["data"].update(source=name, source_dir=str(src), image_size=SIZE)
    validate(p)
    return p


def digest(root: Path) -> dict[str, str]:
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(root.rglob("*")) if f.is_file()}


def test_registry_matches_params():
    assert set(SOURCES) == set(DATA_SOURCES) - {"generated"}


@pytest.mark.parametrize("name", ["mllmu", "umu", "fiu"])
def test_convert_follows_the_contract(name, smoke_params, smoke_dataset, tmp_path):
    src = WRITERS[name](tmp_path / "src")
    params = source_params(smoke_params, name, src)
    root = tmp_path / "out"
    stats = assemble(params, root=root, progress=False)
    data = root / "data"
    gen_root, _ = smoke_dataset
    # same columns and Arrow types as the generated source
    for table in ("profiles.parquet", "qa.parquet"):
        ours, ref = pq.read_schema(data / table), pq.read_schema(gen_root / "data" / table)
        assert [(f.name, str(f.type)) for f in ours] == [(f.name, str(f.type)) for f in ref], table
    profiles, qa = pd.read_parquet(data / "profiles.parquet"), pd.read_parquet(data / "qa.parquet")
    assert len(profiles) == 12 and profiles.profile_id.is_unique and profiles.cue.is_unique
    # splits: the source's forget set (4 people) in 3 sequential tasks (smoke preset), holdout, retain
    forget = profiles[profiles.split == "forget"]
    assert len(forget) == 4 and sorted(forget.task.unique()) == [1, 2, 3]
    assert (profiles.loc[profiles.split != "forget", "task"] == 0).all()
    assert (profiles.split == "holdout").sum() >= 1 and (profiles.split == "retain").sum() >= 1
    trained = set(profiles.profile_id[profiles.split != "holdout"])
    for bench, ratios in (("fiu", params["data"]["fiu_ratios"]), ("umu", params["data"]["umu_ratios"])):
        prev: set = set()
        for r in sorted(ratios):
            members = set(profiles.profile_id[profiles[static_split_name(bench, r)]])
            assert len(members) == max(1, round(r * len(trained))) and members <= trained and prev <= members
            prev = members
    # QA rows: views, forms, options, images, splits copied from the profile
    assert "vqa_masked" not in set(qa.view)
    assert set(qa.field) <= set(MASKABLE[profiles.domain.iloc[0]]) - {"name"}
    assert (qa.groupby("profile_id").split.nunique() == 1).all()
    split_of = profiles.set_index("profile_id").split
    assert (qa.split == qa.profile_id.map(split_of)).all()
    for row in qa.itertuples():
        if row.form == "classification":
            assert len(row.options) == 4 == len(set(row.options)) and row.answer in list(row.options)
        else:
            assert len(row.options) == 0
        if row.view == "text":
            assert pd.isna(row.image)
        else:
            assert row.image == image_name(row.profile_id, FULL)
    for names in profiles["images"]:
        for rel in names:
            with Image.open(data / rel) as im:
                assert im.format == "PNG" and im.size == (SIZE, SIZE)
    assert stats["source"]["name"] == name and stats["qa"] == len(qa)
    assert json.loads((root / "outputs" / "dataset_stats.json").read_text()) == stats
    report = validate_dataset(params, root)
    assert report.success, report.failures
    # deterministic: a second conversion is byte-identical
    again = tmp_path / "again"
    assemble(params, root=again, progress=False)
    assert digest(again / "data") == digest(data)


def test_mllmu_views_forms_and_pairs(smoke_params, tmp_path):
    src = write_mllmu(tmp_path / "src")
    root = tmp_path / "out"
    assemble(source_params(smoke_params, "mllmu", src), root=root, progress=False)
    qa = pd.read_parquet(root / "data" / "qa.parquet")
    profiles = pd.read_parquet(root / "data" / "profiles.parquet").set_index("profile_id")
    assert set(qa.view) == {"vqa_full", "text"} and set(qa.form) == {"generation", "cloze", "classification"}
    assert profiles.loc["mllmu-0", "name"] == "Person 0"
    one = qa[qa.profile_id == "mllmu-0"]
    assert len(one) == 8   # 2+2 classification, 1+1 cloze, 1+1 generation
    views = one.groupby("pair_id").view.apply(frozenset)
    # classification #0 and the cloze questions have equal answers: pairs; the rest are single
    assert sum(v == {"vqa_full", "text"} for v in views) == 2 and len(views) == 6
    for _, group in one.groupby("pair_id"):
        assert group.form.nunique() == 1 and group.field.nunique() == 1 and group.answer.nunique() == 1
    cls = one[(one.form == "classification") & (one.view == "vqa_full")].iloc[0]
    assert cls.answer == CITIES[0] and cls.question == "Where was this person born?"


def test_umu_pairs_share_keys(smoke_params, tmp_path):
    src = write_umu(tmp_path / "src")
    root = tmp_path / "out"
    assemble(source_params(smoke_params, "umu", src), root=root, progress=False)
    qa = pd.read_parquet(root / "data" / "qa.parquet")
    one = qa[qa.profile_id == "umu-u000"]
    assert len(one) == 7
    views = one.groupby("pair_id").view.apply(frozenset)
    assert sorted(len(v) for v in views) == [1, 2, 2, 2]   # generation key "1" is text-only
    cloze = one[one.form == "cloze"]
    assert set(cloze.answer) == {JOBS[5]} and cloze.pair_id.nunique() == 1
    assert set(one[one.form == "classification"].answer) == {CITIES[0]}


def test_fiu_source_holdout_and_views(smoke_params, tmp_path, monkeypatch):
    src = write_fiu(tmp_path / "src")
    monkeypatch.setattr(fiu, "TRAINED", 9)   # people after the first TRAINED are never trained on
    params = source_params(smoke_params, "fiu", src / "dataset")
    root = tmp_path / "out"
    stats = assemble(params, root=root, progress=False)
    profiles = pd.read_parquet(root / "data" / "profiles.parquet")
    qa = pd.read_parquet(root / "data" / "qa.parquet")
    assert sorted(profiles.profile_id[profiles.split == "holdout"]) == ["fiu-1009", "fiu-1010", "fiu-1011"]
    assert sorted(profiles.profile_id[profiles.split == "forget"]) == ["fiu-1000", "fiu-1001", "fiu-1002", "fiu-1003"]
    assert set(qa.view) == {"vqa_full"} and set(qa.form) == {"generation"} and qa.pair_id.is_unique
    assert (profiles.domain == "medical").all() and stats["source"]["holdout"] == "source"
    assert validate_dataset(params, root).success


def test_fewer_forget_profiles_than_tasks_give_one_task(smoke_params, tmp_path):
    src = write_mllmu(tmp_path / "src", n_forget=2)
    root = tmp_path / "out"
    assemble(source_params(smoke_params, "mllmu", src), root=root, progress=False)
    profiles = pd.read_parquet(root / "data" / "profiles.parquet")
    assert list(profiles.task[profiles.split == "forget"]) == [1, 1]


@pytest.mark.parametrize("name,breakage,needle", [
    ("mllmu", lambda s: shutil.rmtree(s / "forget_5"), "forget_<N>"),
    ("mllmu", lambda s: shutil.rmtree(s / "retain_95"), "retain_95"),
    ("umu", lambda s: pd.read_parquet(s / "forget_10" / "train-00000-of-00001.parquet").drop(columns="Cloze")
     .to_parquet(s / "forget_10" / "train-00000-of-00001.parquet"), "'Cloze'"),
    ("fiu", lambda s: (s / "dataset" / "split.json").unlink(), "split.json"),
    ("fiu", lambda s: (s / "dataset" / "images" / "1003.jpg").unlink(), "1003"),
])
def test_missing_file_or_column_is_one_line_user_error(name, breakage, needle, smoke_params, tmp_path):
    src = WRITERS[name](tmp_path / "src")
    breakage(src)
    with pytest.raises(UserError) as err:
        assemble(source_params(smoke_params, name, src), root=tmp_path / "out", progress=False)
    msg = str(err.value)
    assert needle in msg and "\n" not in msg and f"data.source={name}" in msg
    assert not (tmp_path / "out" / "data" / "qa.parquet").exists()


def test_source_dir_is_checked(smoke_params, tmp_path):
    p = copy.deepcopy(smoke_params)
    p["data"]["source"] = "umu"
    with pytest.raises(ParamError, match="data.source_dir"):
        validate(p)
    p["data"]["source_dir"] = 3
    with pytest.raises(ParamError, match="data.source_dir=3"):
        validate(p)
    p["data"]["source_dir"] = "no/such/dir"
    validate(p)
    with pytest.raises(UserError) as err:
        assemble(p, root=tmp_path, progress=False)
    assert "data.source_dir='no/such/dir'" in str(err.value) and str(tmp_path / "no/such/dir") in str(err.value)
    (tmp_path / "empty").mkdir()
    p["data"]["source_dir"] = str(tmp_path / "empty")
    with pytest.raises(UserError, match="is empty"):
        assemble(p, root=tmp_path, progress=False)
    p["data"]["source_holdout"] = 1.5
    with pytest.raises(ParamError, match="data.source_holdout=1.5"):
        validate(p)


def _stage_dir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy2(ROOT / "params.yaml", work / "params.yaml")
    set_param(work, "scale", "smoke")
    set_param(work, "data.image_size", SIZE)
    set_param(work, "data.source", "mllmu")
    return work


def test_assemble_stage_with_mllmu_source(tmp_path):
    work = _stage_dir(tmp_path)
    write_mllmu(work / "bench")
    set_param(work, "data.source_dir", "bench")   # relative to the repository root
    proc = run(["python", "-m", "stages.assemble"], work, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    assert "assembled 12 profiles, 12 images" in proc.stdout
    stats = json.loads((work / "outputs" / "dataset_stats.json").read_text())
    assert stats["source"]["name"] == "mllmu" and stats["source"]["forget_set"] == "forget_5"
    assert (work / "data" / "images" / "mllmu-0_full.png").is_file()


def test_assemble_stage_missing_source_dir_exits_2(tmp_path):
    work = _stage_dir(tmp_path)
    set_param(work, "data.source_dir", "missing")
    proc = run(["python", "-m", "stages.assemble"], work, check=False, PYTHONPATH=str(ROOT))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "data.source_dir='missing'" in lines[0]
    assert not (work / "data").exists()
