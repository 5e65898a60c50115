"""Knowledge-recoverability probes (SPEC section 7, KR b).

For a forget question the unlearned model fails, ask the same fact differently: a rephrased
question (same view and form), the other view of the same pair (text <-> image), and the two
other forms (generation / cloze / classification). Any probe answered correctly (strict
matching) shows the fact is still in the model.

No distractor of a probe's classification options can be scored as the answer: options are
drawn from (or, when reused from the dataset, checked against) `rows.wrong_values`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from mmunlearn.data.qa import _subject, question
from mmunlearn.data.schema import FORMS, LABEL, N_OPTIONS, PERSON, TITLE
from mmunlearn.metrics.rows import differs, wrong_values

PROBES = ("rephrased", "other_view", "generation", "cloze", "classification")


def rephrased_question(profile: dict, field: str, view: str, form: str) -> str:
    """Another wording of `question` (same view, form and answer): a KR probe never trained on."""
    label = LABEL[field]
    if view == "text":
        who = _subject(profile, field)
        return {
            "generation": f"Tell me the {label} of {who}.",
            "cloze": f"For {who}, the {label} is ___.",
            "classification": f"Pick the {label} of {who}.",
        }[form]
    doc = TITLE[profile["domain"]].lower()
    person = PERSON[profile["domain"]]
    return {
        "generation": f"Tell me the {label} of the {person} this {doc} belongs to.",
        "cloze": f"The {person} this {doc} belongs to has {label} ___.",
        "classification": f"Pick the {label} of the {person} this {doc} belongs to.",
    }[form]


def _options(answer: str, pool: list[str], rng: np.random.Generator, what: str = "probe options") -> list[str]:
    """The answer at a seeded position among up to N_OPTIONS - 1 seeded distractors that differ
    from it under the scoring normaliser (`rows.wrong_values`)."""
    others = wrong_values(answer, pool, what)
    picks = [others[i] for i in rng.choice(len(others), min(N_OPTIONS - 1, len(others)), replace=False)]
    picks.insert(int(rng.integers(len(picks) + 1)), answer)
    return picks


def _checked_options(options, answer: str, pool: list[str], rng: np.random.Generator, what: str) -> list[str]:
    """Dataset options reused by a probe, kept as they are when every distractor differs from the
    answer under the scoring normaliser; otherwise redrawn by `_options`."""
    options = [str(o) for o in options]
    if all(o == answer or differs(o, answer) for o in options) and options.count(answer) == 1:
        return options
    return _options(answer, pool, rng, what)


def probe_rows(failed: list[dict], forget_rows: list[dict], profiles: pd.DataFrame, pools: dict,
               seed: int) -> list[dict]:
    """Probe rows for each failed forget row; each carries `probe` (its kind) and `source`
    (the failed row's qa_id). `other_view` reuses the paired row of the forget set itself."""
    by_id = profiles.set_index("profile_id").to_dict("index")
    by_pair: dict[str, list[dict]] = {}
    for r in forget_rows:
        by_pair.setdefault(r["pair_id"], []).append(r)
    out = []
    for k, row in enumerate(failed):
        rng = np.random.default_rng([seed, 0x4B52, k])
        profile = {**by_id[row["profile_id"]], "profile_id": row["profile_id"]}
        base = {key: row[key] for key in ("profile_id", "domain", "field", "answer", "image", "pair_id",
                                          "split", "task")}

        def make(kind: str, view: str, form: str, text: str, image, options) -> dict:
            return {**base, "qa_id": f"{row['qa_id']}~{kind}", "probe": kind, "source": row["qa_id"],
                    "view": view, "form": form, "question": text, "image": image, "options": options}

        answer, pool = str(row["answer"]), pools[(row["domain"], row["field"])]
        what = f"probe options of {row['domain']}.{row['field']}"

        def options_of(r: dict) -> list[str]:
            return _checked_options(r["options"], answer, pool, rng, what) if r["form"] == "classification" else []

        out.append(make("rephrased", row["view"], row["form"],
                        rephrased_question(profile, row["field"], row["view"], row["form"]), row["image"],
                        options_of(row)))
        partner = [r for r in by_pair[row["pair_id"]] if r["view"] != row["view"]
                   and (r["view"] == "text") != (row["view"] == "text")]
        if partner:
            p = partner[0]
            out.append(make("other_view", p["view"], p["form"], p["question"], p["image"], options_of(p)))
        for form in FORMS:
            if form == row["form"]:
                continue
            options = _options(answer, pool, rng, what) if form == "classification" else []
            out.append(make(form, row["view"], form, question(profile, row["field"], row["view"], form),
                            row["image"], options))
    return out
