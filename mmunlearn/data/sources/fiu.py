"""FIUBench (Ma et al., ICLR 2025; huggingface.co/datasets/gray311/FIUBench, 400 fictitious faces).

Reads the `dataset/` directory of the FIUBench code (or a directory holding the same files):

- `full.json`: one person per line (JSON lines; a single JSON array is accepted too) with
  `unique_id`, `image_path` (the face image, relative to the FIUBench checkout) and `qa_list`, a
  list of {`question`, `answer`, ...} (`paraphrased_question`, `paraphrased_answer`,
  `perturbed_answer` are the benchmark's robustness / truth-ratio variants and are not converted).
- `split.json`: {`forget1`: [unique_id, ...], `forget5`: [...], `forget10`: [...], `retain...`}.
  The largest `forget<N>` list is the forget set (split into our sequential forget tasks).

Mapping: every FIUBench question is asked about the face image -> view `vqa_full`, form
`generation` (FIUBench has no text-only questions, no cloze or multiple-choice form, no masked
images): no `text`/`vqa_masked` rows and no unimodal/multimodal pairs (each row its own pair_id).

Decisions where the format does not say:
- `image_path` is resolved against the directory of `full.json`, its parent (the FIUBench
  checkout; paths there look like `./dataset/...`) and the source directory; failing that, the
  file name under `images/` next to `full.json`.
- Holdout: FIUBench's code trains and evaluates on the first 400 people of `full.json` only
  (`data[:400]`); people after them, if the file has any, are never trained on and become the
  holdout. Otherwise the holdout is a seeded share (`data.source_holdout`) of the retain people.
- The domain is `medical`: FIUBench identities carry health records (plus criminal histories).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from mmunlearn.data.sources.common import Person, Question, SourceData, natural_key, plain, source_error, text

NAME = "fiu"
DOMAIN = "medical"
TRAINED = 400   # FIUBench's data_module keeps data[:400]


def _locate(src_dir: Path) -> Path:
    for d in (src_dir, src_dir / "dataset"):
        if (d / "full.json").is_file():
            return d
    raise source_error(NAME, f"{src_dir}/full.json not found (nor {src_dir}/dataset/full.json): the FIUBench people")


def _read_people(path: Path) -> list[dict]:
    raw = path.read_text(encoding="utf-8")
    try:
        data = json.loads(raw)
        rows = data if isinstance(data, list) else [data]
    except ValueError:
        rows = []
        for i, line in enumerate(raw.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as err:
                    raise source_error(NAME, f"{path} line {i}: not JSON ({err})") from None
    for i, row in enumerate(rows):
        for key in ("unique_id", "image_path", "qa_list"):
            if not isinstance(row, dict) or key not in row:
                raise source_error(NAME, f"{path} person {i}: key {key!r} missing")
    return rows


def _image(path_text: str, base: Path, src_dir: Path, sid: str) -> Path:
    rel = Path(path_text)
    if rel.is_absolute() and rel.is_file():
        return rel
    for root in (base, base.parent, src_dir):
        if (root / rel).is_file():
            return root / rel
    if (base / "images" / rel.name).is_file():
        return base / "images" / rel.name
    raise source_error(NAME, f"image {path_text!r} of unique_id {sid} not found under {base}")


def load(src_dir: Path) -> SourceData:
    src_dir = Path(src_dir)
    base = _locate(src_dir)
    split_path = base / "split.json"
    if not split_path.is_file():
        raise source_error(NAME, f"{split_path} not found: the forget splits (forget1, forget5, forget10)")
    try:
        splits = json.loads(split_path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise source_error(NAME, f"{split_path}: not JSON ({err})") from None
    forget_keys = sorted((int(m.group(1)), k) for k in (splits if isinstance(splits, dict) else {})
                         if (m := re.fullmatch(r"forget(\d+)", str(k))))
    if not forget_keys:
        raise source_error(NAME, f"{split_path}: no 'forget<N>' list (expected forget1, forget5, forget10)")
    forget_key = forget_keys[-1][1]
    rows = _read_people(base / "full.json")
    persons, skipped, holdout, seen = [], 0, [], set()
    for i, row in enumerate(rows):
        sid = str(row["unique_id"])
        if sid in seen:
            continue
        seen.add(sid)
        questions = []
        for k, qa in enumerate(plain(row["qa_list"]) or []):
            q, a = (text(qa.get("question")), text(qa.get("answer"))) if isinstance(qa, dict) else ("", "")
            if not q or not a:
                skipped += 1
                continue
            questions.append(Question(f"qa{k:02d}", "vqa_full", "generation", q, a))
        persons.append(Person(sid, sid, _image(str(row["image_path"]), base, src_dir, sid), questions))
        if i >= TRAINED:
            holdout.append(sid)
    persons.sort(key=lambda p: natural_key(p.source_id))
    forget = [str(s) for s in plain(splits[forget_key]) or []]
    return SourceData(persons, forget, holdout, DOMAIN,
                      {"forget_set": forget_key, "holdout": "source" if holdout else "retain share"}, skipped)
