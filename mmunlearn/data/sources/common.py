"""What every benchmark loader returns, and the decoding helpers they share.

A loader reads a local copy of one benchmark and returns a `SourceData`: its people (an image and
their questions, each tagged with view, form and a `fact` key that the unimodal and multimodal
versions of one question share) and which of them the benchmark puts in its forget set and, where
it has any, in a held-out set. `mmunlearn.data.sources.convert` turns that into our data contract.
"""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmunlearn.data.schema import N_OPTIONS
from mmunlearn.errors import UserError

LETTERS = ("A", "B", "C", "D")


@dataclass
class Question:
    fact: str          # the unimodal/multimodal versions of one question share it (one pair_id)
    view: str          # vqa_full (asked with the person's image) | text (no image)
    form: str          # generation | cloze | classification
    question: str
    answer: str
    options: list[str] = field(default_factory=list)


@dataclass
class Person:
    source_id: str
    name: str
    image: bytes | Path       # encoded image bytes, or a path to an image file
    questions: list[Question]


@dataclass
class SourceData:
    persons: list[Person]
    forget: list[str]          # source ids of the benchmark's forget set
    holdout: list[str]         # source ids the benchmark never trains on ([] when it has none)
    domain: str                # our domain the benchmark's people are filed under
    info: dict = field(default_factory=dict)   # provenance for dataset_stats.json
    skipped: int = 0           # malformed questions left out (empty text, bad options)


def source_error(source: str, what: str) -> UserError:
    """One-line error about a benchmark copy (what is missing and where)."""
    return UserError(f"data.source={source}: {' '.join(str(what).split())}")


def plain(value: Any) -> Any:
    """numpy arrays / pyarrow-decoded structs -> plain lists and dicts."""
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def structure(value: Any, source: str, where: str) -> Any:
    """A nested task column: already a struct/list, or a JSON / Python-literal string of one."""
    value = plain(value)
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8")
    if isinstance(value, str):
        text = value.strip()
        for parse in (json.loads, ast.literal_eval):
            try:
                return plain(parse(text))
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
        raise source_error(source, f"{where}: neither JSON nor a Python literal")
    return value


def text(value: Any) -> str:
    """A question or answer as one stripped string (first item of a list of variants)."""
    value = plain(value)
    if isinstance(value, list):
        value = value[0] if value else ""
    return "" if value is None else str(value).strip()


def natural_key(value: str) -> tuple:
    """Sort ids numerically where they are numbers ('2' < '10'), else as text."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", str(value)) if p)


def split_dirs(src_dir: Path, pattern: str) -> list[tuple[int, Path]]:
    """Sub-directories named like `pattern` (one integer group), sorted by that integer."""
    rx = re.compile(pattern)
    found = []
    for p in src_dir.iterdir() if src_dir.is_dir() else []:
        m = rx.fullmatch(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def read_parquet_dir(directory: Path, required: tuple[str, ...], source: str):
    """All *.parquet shards of one split directory, concatenated; checks the required columns."""
    import pandas as pd

    files = sorted(directory.glob("*.parquet"))
    if not files:
        raise source_error(source, f"{directory}/*.parquet not found")
    frames = []
    for f in files:
        df = pd.read_parquet(f)
        missing = [c for c in required if c not in df.columns]
        if missing:
            raise source_error(source, f"{f}: column {missing[0]!r} missing (has {', '.join(map(str, df.columns))})")
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def image_bytes(value: Any, source: str, where: str) -> bytes:
    """Encoded bytes of a Hugging Face `Image` cell ({'bytes': ..., 'path': ...}) or of raw bytes."""
    value = plain(value)
    if isinstance(value, dict):
        value = value.get("bytes")
    if isinstance(value, (bytes, bytearray)) and value:
        return bytes(value)
    raise source_error(source, f"{where}: image has no bytes")


def read_persons(frames, questions, name, source: str) -> tuple[list[Person], int]:
    """One Person per distinct `ID` over (dataframe, directory) pairs, first occurrence kept, in
    natural ID order; `questions(row, where)` -> (questions, skipped), `name(row, sid)` -> name.
    Returns (persons, skipped questions)."""
    persons, skipped, seen = [], 0, set()
    for df, where in frames:
        for row in df.to_dict("records"):
            sid = str(row["ID"])
            if sid in seen:
                continue
            seen.add(sid)
            qs, bad = questions(row, f"{where} ID {sid}")
            skipped += bad
            persons.append(Person(sid, name(row, sid), image_bytes(row["image"], source, f"{where} ID {sid}"), qs))
    persons.sort(key=lambda p: natural_key(p.source_id))
    return persons, skipped


def choice(options: Any, answer: Any, fallback: Any = None) -> tuple[str, list[str]] | None:
    """(answer text, 4 option texts in A-D order) of a multiple-choice item, or None when the item
    does not give 4 distinct options with the answer among them. `answer` may be a letter ('B',
    'B.', 'B. text', 'B: text') or the answer text; `fallback` is tried when it resolves to nothing."""
    options = plain(options)
    if isinstance(options, dict):
        keyed = {str(k).strip().upper(): text(v) for k, v in options.items()}
        opts = [keyed.get(k, "") for k in LETTERS]
    elif isinstance(options, list):
        opts = [text(v) for v in options]
        keyed = dict(zip(LETTERS, opts))
    else:
        return None
    if len(opts) != N_OPTIONS or len(set(opts)) != N_OPTIONS or not all(opts):
        return None
    for raw in (answer, fallback):
        a = text(raw)
        if not a:
            continue
        if a in opts:
            return a, opts
        letter = a[0].upper()
        if letter in keyed and (len(a) == 1 or a[1] in ".:) "):
            return keyed[letter], opts
    return None


def same_answer(a: str, b: str) -> bool:
    return " ".join(a.lower().split()).rstrip(".") == " ".join(b.lower().split()).rstrip(".")


def pair_by_position(prefix: str, form: str, multimodal: list[tuple[str, str, list[str]]],
                     unimodal: list[tuple[str, str, list[str]]]) -> list[Question]:
    """Questions of one task given as two lists (image+text, text only): the i-th of each is one
    pair (shared fact) when both give the same answer, otherwise each is its own fact."""
    out = []
    for i in range(max(len(multimodal), len(unimodal))):
        mm = multimodal[i] if i < len(multimodal) else None
        uni = unimodal[i] if i < len(unimodal) else None
        paired = mm is not None and uni is not None and same_answer(mm[1], uni[1])
        if mm is not None:
            out.append(Question(f"{prefix}{i:02d}", "vqa_full", form, mm[0], mm[1], list(mm[2])))
        if uni is not None:
            out.append(Question(f"{prefix}{i:02d}" + ("" if paired else "t"), "text", form, uni[0], uni[1],
                                list(uni[2])))
    return out
