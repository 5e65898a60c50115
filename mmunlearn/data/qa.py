"""Multi-view, multi-form QA over profiles (SPEC section 4).

Per profile: PAIRED_FIELDS maskable fields, each asked as a `text` question (naming the person)
and as a `vqa_masked` question (not naming the person; the field is blacked out on the image, so
only memory answers it) with the same form and `pair_id`; some are also asked on the full document
(`vqa_full`, answer visible).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from mmunlearn.data.schema import (FULL, FULL_VIEW_OF, ID_FIELD, LABEL, MASKABLE, N_OPTIONS,
                                   PAIR_FORMS, PAIRED_FIELDS, PERSON, TITLE, image_name)

QA_COLUMNS = ["qa_id", "profile_id", "domain", "field", "view", "form", "question", "answer",
              "options", "image", "pair_id", "split", "task"]


def _subject(profile: dict, field: str) -> str:
    """How a text question names the person (by ID when the asked field is the name)."""
    domain = profile["domain"]
    if field == "name":
        return f"the {PERSON[domain]} with {LABEL[ID_FIELD[domain]]} {profile[ID_FIELD[domain]]}"
    return profile["name"]


def question(profile: dict, field: str, view: str, form: str) -> str:
    label = LABEL[field]
    if view == "text":
        who = _subject(profile, field)
        return {
            "generation": f"What is the {label} of {who}?",
            "cloze": f"The {label} of {who} is ___.",
            "classification": f"Which is the {label} of {who}?",
        }[form]
    doc = TITLE[profile["domain"]].lower()
    person = PERSON[profile["domain"]]
    return {
        "generation": f"What is the {person}'s {label} in this {doc}?",
        "cloze": f"In this {doc}, the {person}'s {label} is ___.",
        "classification": f"Which is the {person}'s {label} in this {doc}?",
    }[form]


def option_pools(profiles: pd.DataFrame) -> dict[tuple[str, str], list[str]]:
    """Distinct values per (domain, maskable field), sorted: the distractor pools."""
    pools = {}
    for domain, group in profiles.groupby("domain", sort=True):
        for field in MASKABLE[domain]:
            pools[(domain, field)] = sorted(set(group[field].astype(str)))
    return pools


def build_qa(profiles: pd.DataFrame, seed: int) -> pd.DataFrame:
    """QA rows for every profile; profiles must carry `split` and `task` columns."""
    pools = option_pools(profiles)
    rows = []
    for idx, profile in enumerate(profiles.to_dict("records")):
        rng = np.random.default_rng([seed, 0x9A, idx])
        domain = profile["domain"]
        fields = [MASKABLE[domain][i] for i in rng.permutation(len(MASKABLE[domain]))[:PAIRED_FIELDS]]
        for k, field in enumerate(fields):
            form = PAIR_FORMS[k]
            answer = str(profile[field])
            options: list[str] = []
            if form == "classification":
                others = [v for v in pools[(domain, field)] if v != answer]
                if len(others) < N_OPTIONS - 1:
                    raise ValueError(f"field {domain}.{field}: only {len(others)} distractor values; "
                                     "use more profiles")
                picks = [others[i] for i in rng.choice(len(others), N_OPTIONS - 1, replace=False)]
                options = list(picks)
                options.insert(int(rng.integers(N_OPTIONS)), answer)
            pair_id = f"{profile['profile_id']}-{field}"
            views = ["text", "vqa_masked"] + (["vqa_full"] if k in FULL_VIEW_OF else [])
            for view in views:
                image = None
                if view == "vqa_masked":
                    image = image_name(profile["profile_id"], field)
                elif view == "vqa_full":
                    image = image_name(profile["profile_id"], FULL)
                rows.append({
                    "qa_id": f"{pair_id}-{view}",
                    "profile_id": profile["profile_id"],
                    "domain": domain,
                    "field": field,
                    "view": view,
                    "form": form,
                    "question": question(profile, field, view, form),
                    "answer": answer,
                    "options": options,
                    "image": image,
                    "pair_id": pair_id,
                    "split": profile["split"],
                    "task": int(profile["task"]),
                })
    return pd.DataFrame(rows, columns=QA_COLUMNS)

