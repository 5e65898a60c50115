"""Knowledge-recoverability probes (SPEC section 7, KR b).

For a forget question the unlearned model fails, ask the same fact differently: a rephrased
question (same view and form), the other view of the same pair (text <-> image), and the two
other forms (generation / cloze / classification). Any probe answered correctly (strict
matching) shows the fact is still in the model.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from mmunlearn.data.qa import _subject, question
from mmunlearn.data.schema import FORMS, LABEL, N_OPTIONS, PERSON, TITLE

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


def _options(answer: str, pool: list[str], rng: np.random.Generator) -> list[str]:
    others = [v for v in pool if v != answer]
    picks = [others[i] for i in rng.choice(len(others), min(N_OPTIONS - 1, len(others)), replace=False)]
    picks.insert(int(rng.integers(len(picks) + 1)), answer)
    return picks


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

        opts = list(row["options"]) if row["form"] == "classification" else []
        out.append(make("rephrased", row["view"], row["form"],
                        rephrased_question(profile, row["field"], row["view"], row["form"]), row["image"], opts))
        partner = [r for r in by_pair[row["pair_id"]] if r["view"] != row["view"]
                   and (r["view"] == "text") != (row["view"] == "text")]
        if partner:
            p = partner[0]
            out.append(make("other_view", p["view"], p["form"], p["question"], p["image"],
                            list(p["options"]) if p["form"] == "classification" else []))
        for form in FORMS:
            if form == row["form"]:
                continue
            options = (_options(str(row["answer"]), pools[(row["domain"], row["field"])], rng)
                       if form == "classification" else [])
            out.append(make(form, row["view"], form, question(profile, row["field"], row["view"], form),
                            row["image"], options))
    return out
