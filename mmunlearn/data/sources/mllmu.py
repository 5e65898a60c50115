"""MLLMU-Bench (Liu et al., NAACL 2025; huggingface.co/datasets/MLLMMU/MLLMU-Bench).

Reads a local clone of the Hugging Face dataset (`git clone .../MLLMMU/MLLMU-Bench`):

- `forget_<N>/*.parquet` (N = 5, 10, 15): the forget set; the largest N present is used (its
  profiles are split into our sequential forget tasks).
- `retain_<100-N>/*.parquet`: the remaining fictitious profiles; when that directory is absent,
  `Full_Set/*.parquet` minus the forget IDs is used instead.
- columns: `ID`, `image` (Hugging Face Image struct: `bytes`, `path`), `Classification_Task`
  (struct of `Image_Textual_Questions` / `Pure_Text_Questions`, lists of {`Question`,
  `Options` {A, B, C, D}, `Correct_Answer` (a letter)}), `Mask_Task` and `Generation_Task` (lists
  of {`Question`, `Ground_Truth`, `Type` = `Image_Textual` | `Pure_Text`}), optional `biography`
  (JSON string with `Name`). Task columns stored as JSON / Python-literal strings are accepted.

Mapping: `Image_Textual` questions -> `vqa_full` (asked with the profile image), `Pure_Text` ->
`text`; Classification_Task -> `classification` (options A-D), Mask_Task -> `cloze` (its `__`
blank kept), Generation_Task -> `generation`. MLLMU has no masked images, so no `vqa_masked` rows.

Decisions where the format does not say:
- Pairs: MLLMU does not link an image question to its text twin. The i-th `Image_Textual` and
  i-th `Pure_Text` question of one task share a `pair_id` when their answers agree (case and a
  trailing period ignored); otherwise each gets its own.
- Not converted: `Test_Set` (the same people with other images and paraphrased questions, no new
  people), `Retain_Set` (153 real celebrities, known from pre-training: neither fictitious
  members nor fair non-members), `ft_Data` and the `question`/`answer` columns (fine-tuning text,
  not the evaluated questions).
- Holdout: MLLMU has no fictitious people outside forget/retain, so the holdout is a seeded share
  (`data.source_holdout`) of the retain profiles.
"""
from __future__ import annotations

import json
from pathlib import Path

from mmunlearn.data.sources.common import (Question, SourceData, choice, read_persons, pair_by_position,
                                           plain, read_parquet_dir, source_error, split_dirs, structure, text)

NAME = "mllmu"
DOMAIN = "labor"   # biographies (employment, birthplace, ...): the contract's person-and-job domain
REQUIRED = ("ID", "image", "Classification_Task", "Mask_Task", "Generation_Task")
VIEW = {"image_textual": "vqa_full", "pure_text": "text"}


def load(src_dir: Path) -> SourceData:
    src_dir = Path(src_dir)
    forget_dirs = split_dirs(src_dir, r"forget_(\d+)")
    if not forget_dirs:
        raise source_error(NAME, f"{src_dir}/forget_<N>/ not found (a clone of MLLMMU/MLLMU-Bench has forget_5, "
                                 "forget_10, forget_15)")
    n, forget_dir = forget_dirs[-1]
    forget_df = read_parquet_dir(forget_dir, REQUIRED, NAME)
    forget_ids = [str(i) for i in forget_df["ID"]]
    retain_dir = src_dir / f"retain_{100 - n}"
    if retain_dir.is_dir():
        retain_df = read_parquet_dir(retain_dir, REQUIRED, NAME)
    elif (src_dir / "Full_Set").is_dir():
        retain_dir = src_dir / "Full_Set"
        full = read_parquet_dir(retain_dir, REQUIRED, NAME)
        retain_df = full[~full["ID"].astype(str).isin(set(forget_ids))]
    else:
        raise source_error(NAME, f"{retain_dir}/ not found (nor {src_dir}/Full_Set/): the retain profiles")
    persons, skipped = read_persons(((forget_df, forget_dir), (retain_df, retain_dir)), _questions, _name, NAME)
    return SourceData(persons, forget_ids, [], DOMAIN, {"forget_set": forget_dir.name, "holdout": "retain share"},
                      skipped)


def _name(row: dict, sid: str) -> str:
    bio = row.get("biography")
    if isinstance(bio, str):
        try:
            bio = json.loads(bio)
        except ValueError:
            bio = None
    bio = plain(bio)
    if isinstance(bio, dict) and text(bio.get("Name")):
        return text(bio["Name"])
    return sid


def _questions(row: dict, where: str) -> tuple[list[Question], int]:
    skipped = 0
    cls = structure(row["Classification_Task"], NAME, f"{where}: Classification_Task") or {}
    lists = {}
    for key, view in (("Image_Textual_Questions", "vqa_full"), ("Pure_Text_Questions", "text")):
        items = []
        for item in cls.get(key) or []:
            q = text(item.get("Question"))
            got = choice(item.get("Options"), item.get("Correct_Answer"))
            if not q or got is None:
                skipped += 1
                continue
            items.append((q, got[0], got[1]))
        lists[view] = items
    out = pair_by_position("cls", "classification", lists["vqa_full"], lists["text"])
    for column, form, prefix in (("Mask_Task", "cloze", "clz"), ("Generation_Task", "generation", "gen")):
        by_view: dict[str, list] = {"vqa_full": [], "text": []}
        for item in structure(row[column], NAME, f"{where}: {column}") or []:
            view = VIEW.get(text(item.get("Type")).lower())
            q, a = text(item.get("Question")), text(item.get("Ground_Truth"))
            if view is None or not q or not a:
                skipped += 1
                continue
            by_view[view].append((q, a, []))
        out += pair_by_position(prefix, form, by_view["vqa_full"], by_view["text"])
    return out, skipped
