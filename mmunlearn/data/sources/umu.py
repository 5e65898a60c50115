"""UMU-Bench (github.com/QDRhhhh/UMU-bench; 500 fictitious + 153 real profiles, built on MLLMU-Bench).

Reads the directory its scripts take as `--data_split_dir`:

- `forget_<N>/*.parquet` (N = 5, 10, 15): the forget set; the largest N present is used (its
  profiles are split into our sequential forget tasks).
- `retain_<100-N>/*.parquet`: the retained fictitious profiles.
- columns: `ID`, `image` (Hugging Face Image struct with `bytes`), and three task columns holding
  a Python-literal (or JSON) string of {'unimodal': {key: item}, 'muitimodal': {key: item}}
  (the benchmark spells it 'muitimodal'; 'multimodal' is accepted too):
  `Classify` (item: `question`, `options` {A, B, C, D}, `answer` such as 'B. text'),
  `Cloze` (item: `question`, `answer`) and `Generation` (item: `question`, `answer`).

Mapping: 'muitimodal' items -> `vqa_full` (asked with the profile image), 'unimodal' items ->
`text`; Classify -> `classification`, Cloze -> `cloze`, Generation -> `generation`. The same key in
both modalities is one question asked two ways: the two rows share a `pair_id` (what AccF/AccR
and RLF/RLR are computed over). UMU has no masked images, so no `vqa_masked` rows.

Decisions where the format does not say:
- Classification: the benchmark scores both modalities against the unimodal item's answer
  letter; each item's own letter is used here, the unimodal one when an item has none.
- Cloze answers: the benchmark's scorer keeps the text before the first period; the full answer
  is kept here (only a trailing period is dropped), so answers such as 'St. Louis' survive.
- Not converted: `MM_QA` / `UM_QA` (fine-tuning text, not the evaluated questions) and
  `real_person/` (real people known from pre-training: neither fictitious members nor fair
  non-members).
- Holdout: UMU has no fictitious people outside forget/retain, so the holdout is a seeded share
  (`data.source_holdout`) of the retain profiles.
"""
from __future__ import annotations

from pathlib import Path

from mmunlearn.data.sources.common import (Question, SourceData, choice, read_persons, read_parquet_dir,
                                           source_error, split_dirs, structure, text)

NAME = "umu"
DOMAIN = "labor"   # biographies (employment, birthplace, ...): the contract's person-and-job domain
TASKS = (("Classify", "classification", "cls"), ("Cloze", "cloze", "clz"), ("Generation", "generation", "gen"))
REQUIRED = ("ID", "image") + tuple(t[0] for t in TASKS)


def load(src_dir: Path) -> SourceData:
    src_dir = Path(src_dir)
    forget_dirs = split_dirs(src_dir, r"forget_(\d+)")
    if not forget_dirs:
        raise source_error(NAME, f"{src_dir}/forget_<N>/ not found (UMU-Bench's data_split_dir has forget_5, "
                                 "forget_10, forget_15)")
    n, forget_dir = forget_dirs[-1]
    retain_dir = src_dir / f"retain_{100 - n}"
    if not retain_dir.is_dir():
        raise source_error(NAME, f"{retain_dir}/ not found: the retain profiles of {forget_dir.name}")
    forget_df = read_parquet_dir(forget_dir, REQUIRED, NAME)
    retain_df = read_parquet_dir(retain_dir, REQUIRED, NAME)
    persons, skipped = read_persons(((forget_df, forget_dir), (retain_df, retain_dir)), _questions,
                                    lambda row, sid: sid, NAME)
    return SourceData(persons, [str(i) for i in forget_df["ID"]], [], DOMAIN,
                      {"forget_set": forget_dir.name, "holdout": "retain share"}, skipped)


def _questions(row: dict, where: str) -> tuple[list[Question], int]:
    out, skipped = [], 0
    for column, form, prefix in TASKS:
        task = structure(row[column], NAME, f"{where}: {column}") or {}
        if not isinstance(task, dict):
            raise source_error(NAME, f"{where}: {column} is not a {{'unimodal': ..., 'muitimodal': ...}} mapping")
        uni = task.get("unimodal") or {}
        mul = task.get("muitimodal") or task.get("multimodal") or {}
        for key in list(dict.fromkeys([*mul, *uni])):
            for view, item, twin in (("vqa_full", mul.get(key), uni.get(key)), ("text", uni.get(key), mul.get(key))):
                if not isinstance(item, dict):
                    continue
                q = text(item.get("question"))
                if form == "classification":
                    got = choice(item.get("options"), item.get("answer"),
                                 twin.get("answer") if isinstance(twin, dict) else None)
                    answer, options = got if got else ("", [])
                else:
                    answer, options = text(item.get("answer")), []
                    if form == "cloze":
                        answer = answer.rstrip(".").strip()
                if not q or not answer:
                    skipped += 1
                    continue
                out.append(Question(f"{prefix}-{key}", view, form, q, answer, options))
    return out, skipped
