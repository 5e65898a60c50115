"""Public benchmarks as data sources: convert a local copy into our data contract.

`data.source` picks the source (`generated` is the ICU-Bench-style generator of
`mmunlearn.data.assemble`; the names in `SOURCES` are converted from `data.source_dir`). Each
benchmark module reads the real file layout (see its docstring) and returns people, questions and
the benchmark's forget / held-out people; `convert` then writes `data/profiles.parquet`,
`data/qa.parquet` and `data/images/` with exactly the columns and dtypes of the generated source,
so every later stage runs unchanged:

- `split`: the benchmark's forget set -> `forget`; its held-out people (if it has any) ->
  `holdout`, otherwise a seeded share `data.source_holdout` of the rest; the rest -> `retain`.
- `task`: the forget profiles are split (seeded order, sizes differing by at most one) into the
  `forget_tasks` sequential tasks of the current scale preset, or into one task when the
  benchmark forgets fewer profiles than that; 0 for the others.
- static splits `fiu_forgetXX` / `umu_forgetXX`: nested prefixes of one seeded permutation of the
  trained (forget + retain) profiles per benchmark, exactly as `mmunlearn.data.splits` draws them.
- `view`: image questions -> `vqa_full`, text-only questions -> `text`; benchmarks have no masked
  documents, so no `vqa_masked` rows. `form`: the benchmark's generation / cloze(fill-in-the-blank)
  / classification (4 options containing the answer). `pair_id`: shared by the unimodal and
  multimodal versions of one question where the benchmark has both.
- images: each person's image, converted to RGB PNG and padded (aspect kept) to the square
  `data.image_size`, as `images/<profile_id>_full.png`.
- Contract columns the benchmarks do not have: `domain` is the contract domain closest to the
  benchmark (FIUBench health records -> medical; MLLMU/UMU biographies -> labor); `cue` is the
  profile's index (its identity cue is the photo); `name` is the person's name where the
  benchmark gives one, else its ID. Benchmarks do not label which attribute a question asks, so
  `field` is a slot: a person's k-th question (pair) gets the k-th maskable field of the domain
  other than `name`, cycling; that field's profile column holds the answer of the first question in
  the slot (the distractor pools of random-label methods are built from these columns), and the
  remaining non-name maskable columns repeat the person's answers so none is null. Other fields
  are null.
- Questions without text or answer, and multiple-choice items without 4 distinct options that
  contain the answer, are left out (counted in `dataset_stats.json` under `source.skipped_questions`);
  people left without any question are dropped (`source.dropped_profiles`).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from mmunlearn.data.qa import QA_COLUMNS
from mmunlearn.data.schema import FIELDS, FULL, MASKABLE, image_name
from mmunlearn.data.sources import fiu, mllmu, umu
from mmunlearn.data.sources.common import Person, SourceData, natural_key, source_error
from mmunlearn.data.splits import static_split_name
from mmunlearn.errors import UserError
from mmunlearn.params import data_scale

SOURCES = {"mllmu": mllmu, "umu": umu, "fiu": fiu}
DEFAULT_HOLDOUT = 0.2
# Our maskable fields other than the name: the slots a benchmark's questions are filed under.
SLOTS = {d: tuple(f for f in MASKABLE[d] if f != "name") for d in MASKABLE}
ALL_FIELDS = list(dict.fromkeys(FIELDS["medical"] + FIELDS["labor"]))


def _safe(source_id: str) -> str:
    out = "".join(c if c.isalnum() or c in "._" else "_" for c in source_id.strip())
    return out or "x"


def _profile_ids(name: str, persons: list[Person]) -> list[str]:
    ids, used = [], set()
    for p in persons:
        pid = f"{name}-{_safe(p.source_id)}"
        k = 1
        while pid in used:
            k += 1
            pid = f"{name}-{_safe(p.source_id)}~{k}"
        used.add(pid)
        ids.append(pid)
    return ids


def assign(params: dict, data: SourceData, n: int, ids: list[str]) -> pd.DataFrame:
    """split / task / static-split columns for n profiles (rows in profile order)."""
    seed = int(params["seed"])
    by_sid = {sid: i for i, sid in enumerate(ids)}
    forget = sorted({by_sid[s] for s in data.forget if s in by_sid})
    if not forget:
        raise source_error(params["data"]["source"], f"none of the {len(data.forget)} forget IDs "
                                                     f"({data.info.get('forget_set')}) is among the converted people")
    split = np.array(["retain"] * n, dtype=object)
    split[forget] = "forget"
    holdout = sorted({by_sid[s] for s in data.holdout if s in by_sid} - set(forget))
    if holdout:
        split[holdout] = "holdout"
    else:
        retain = np.flatnonzero(split == "retain")
        share = float(params["data"].get("source_holdout", DEFAULT_HOLDOUT))
        k = max(1, int(round(share * len(retain))))
        if len(retain) - k < 1:
            raise source_error(params["data"]["source"], f"{len(retain)} retain profiles cannot give a holdout "
                                                         f"share and keep a retain profile")
        split[np.sort(np.random.default_rng([seed, 0x40]).permutation(retain)[:k])] = "holdout"
    if not (split == "retain").any():
        raise source_error(params["data"]["source"], "no retain profile is left")
    n_tasks = int(data_scale(params)["forget_tasks"])
    n_tasks = n_tasks if len(forget) >= n_tasks else 1
    task = np.zeros(n, dtype="int64")
    order = np.random.default_rng([seed, 0x7A5]).permutation(np.array(forget))
    for t, chunk in enumerate(np.array_split(order, n_tasks), start=1):
        task[chunk] = t
    out = pd.DataFrame({"split": split.astype(str), "task": task})
    # Static splits: as mmunlearn.data.splits.assign_splits draws them from the trained profiles.
    trained = out.index[out.split != "holdout"].to_numpy()
    for bench, ratios, salt in (("fiu", params["data"]["fiu_ratios"], 0xF1),
                                ("umu", params["data"]["umu_ratios"], 0x0A)):
        perm = np.random.default_rng([seed, salt]).permutation(trained)
        for r in ratios:
            k = max(1, int(round(r * len(trained))))
            col = np.zeros(n, dtype=bool)
            col[out.index.get_indexer(perm[:k])] = True
            out[static_split_name(bench, r)] = col
    return out


def build_tables(params: dict, data: SourceData) -> tuple[pd.DataFrame, pd.DataFrame, list, dict]:
    """(profiles, qa, [(image name, source image)], provenance) in our contract."""
    name = params["data"]["source"]
    domain = data.domain
    persons = [p for p in data.persons if p.questions]
    dropped = len(data.persons) - len(persons)
    if not persons:
        raise source_error(name, "no person with a usable question")
    persons.sort(key=lambda p: natural_key(p.source_id))
    pids = _profile_ids(name, persons)
    splits = assign(params, data, len(persons), [p.source_id for p in persons])
    slots = SLOTS[domain]
    prof_rows, qa_rows, images = [], [], []
    for i, (p, pid) in enumerate(zip(persons, pids)):
        facts = list(dict.fromkeys(q.fact for q in p.questions))
        first_answer = {}
        for q in p.questions:
            first_answer.setdefault(q.fact, q.answer)
        values = {f: None for f in ALL_FIELDS}
        values["name"] = p.name
        for j, field in enumerate(slots):
            values[field] = first_answer[facts[j % len(facts)]]
        st = splits.iloc[i]
        full = image_name(pid, FULL)
        prof_rows.append({"profile_id": pid, "domain": domain, "cue": i, **values, **st.to_dict(),
                          "images": [full]})
        images.append((full, p.image, p.source_id))
        used = set()
        for q in p.questions:
            k = facts.index(q.fact)
            pair_id = f"{pid}-q{k:02d}"
            qa_id = f"{pair_id}-{q.view}"
            m = 1
            while qa_id in used:
                m += 1
                qa_id = f"{pair_id}-{q.view}{m}"
            used.add(qa_id)
            qa_rows.append({"qa_id": qa_id, "profile_id": pid, "domain": domain, "field": slots[k % len(slots)],
                            "view": q.view, "form": q.form, "question": q.question, "answer": q.answer,
                            "options": list(q.options) if q.form == "classification" else [],
                            "image": full if q.view != "text" else None, "pair_id": pair_id,
                            "split": str(st["split"]), "task": int(st["task"])})
    static = [c for c in splits.columns if c not in ("split", "task")]
    profiles = pd.DataFrame(prof_rows, columns=["profile_id", "domain", "cue", *ALL_FIELDS, "split", "task",
                                                *static, "images"])
    profiles["cue"] = profiles["cue"].astype("int64")
    profiles["task"] = profiles["task"].astype("int64")
    qa = pd.DataFrame(qa_rows, columns=QA_COLUMNS)
    qa["task"] = qa["task"].astype("int64")
    info = {"name": name, **data.info, "people": len(data.persons), "skipped_questions": int(data.skipped),
            "dropped_profiles": int(dropped)}
    return profiles, qa, images, info


def _schema(df: pd.DataFrame):
    """Arrow schema of the generated source's tables: large strings, int64, bool, list<string>."""
    import pyarrow as pa

    types = []
    for col in df.columns:
        if col in ("images", "options"):
            t = pa.list_(pa.string())
        elif col in ("cue", "task"):
            t = pa.int64()
        elif df[col].dtype == bool:
            t = pa.bool_()
        else:
            t = pa.large_string()
        types.append(pa.field(col, t))
    return pa.schema(types)


def write_table(path: Path, df: pd.DataFrame) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mmunlearn.io import atomic_path

    table = pa.Table.from_pandas(df, schema=_schema(df), preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def write_image(src, size: int, out: Path, source: str, source_id: str) -> None:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(src) if isinstance(src, bytes) else src) as im:
            img = ImageOps.pad(im.convert("RGB"), (size, size), color=(255, 255, 255))
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise source_error(source, f"image of {source_id} unreadable ({err})") from None
    img.save(out, format="PNG", compress_level=6)


def convert(params: dict, src_dir: str | Path, root: str | Path = ".") -> dict:
    """Convert the local copy of benchmark `data.source` at `src_dir` into data/ under `root`;
    returns the dataset stats (those of the generated source plus a `source` block)."""
    from mmunlearn.data.assemble import dataset_stats
    from mmunlearn.io import atomic_dir

    name = params["data"]["source"]
    if name not in SOURCES:
        raise UserError(f"params: data.source={name!r}: no converter (one of {', '.join(SOURCES)})")
    root, src_dir = Path(root), Path(src_dir)
    data = SOURCES[name].load(src_dir)
    profiles, qa, images, info = build_tables(params, data)
    size = int(params["data"]["image_size"])
    with atomic_dir(root / "data" / "images") as tmp:
        for rel, src, sid in images:
            write_image(src, size, tmp / Path(rel).name, name, sid)
    write_table(root / "data" / "profiles.parquet", profiles)
    write_table(root / "data" / "qa.parquet", qa)
    stats = dataset_stats(profiles, qa)
    stats["source"] = info
    return stats
