"""The one per-row correctness definition behind FA, RA, KR, probes and the continual matrix, and
the one feature set of the paper's membership attack. Every branch (main evaluator, text-only,
cross-architecture, CIFAR-10 where it applies) scores rows through these functions.

- `normalize`: lower case, punctuation to spaces, whitespace collapsed. Signs are kept (`A+` and
  `A-` are different blood types), so a sign-only difference is a different answer.
- `text_match`: normalized exact match, or the gold answer contained as whole words in the
  prediction (generation and cloze forms; SPEC section 7).
- `row_correct`: classification by the chosen option (answer likelihood), every other form by
  `text_match` of the greedy answer.
- `strict_match`: normalized equality only (KR probes, SPEC section 7 "strict matching").
- `wrong_values`: the values of a pool that no scorer could take for the truth (random labels,
  distractor options): neither contains the other under `text_match`.
"""
from __future__ import annotations

import re
import string
from typing import Sequence

import numpy as np

from mmunlearn.metrics.registry import metric, to_numpy

# Punctuation that separates words; `+` and `-` carry meaning in answers (blood types, signs).
_PUNCT = re.compile(f"[{re.escape(''.join(c for c in string.punctuation if c not in '+-'))}]")
_LONE_DASH = re.compile(r"(?<!\S)-+(?!\S)")  # a dash standing alone between spaces


def normalize(text) -> str:
    """Lower-cased words: punctuation other than `+`/`-` -> space, free-standing dashes dropped,
    whitespace collapsed. `"A+"` and `"A-"` stay different; `"Smith, J."` == `"smith j"`."""
    t = _PUNCT.sub(" ", str(text).lower())
    return " ".join(_LONE_DASH.sub(" ", t).split())


def text_match(pred, gold) -> bool:
    """Normalized exact match, or the normalized gold answer contained as whole words."""
    p, g = normalize(pred), normalize(gold)
    return bool(g) and (p == g or f" {g} " in f" {p} ")


def strict_match(pred, gold) -> bool:
    """Normalized equality only: no containment credit."""
    g = normalize(gold)
    return bool(g) and normalize(pred) == g


def differs(value, truth) -> bool:
    """True when `value` can never be scored as `truth` nor `truth` as `value`: neither contains
    the other as whole words after `normalize` (so normalized equality is excluded too)."""
    return not (text_match(value, truth) or text_match(truth, value))


def wrong_values(truth, pool: Sequence, what: str = "value") -> list[str]:
    """The values of `pool` (as str, order kept) that differ from `truth` under the scoring
    normaliser (`differs`) and are not empty once normalized; a ValueError naming `what` when
    none is left."""
    out = [str(v) for v in pool if normalize(v) and differs(v, truth)]
    if not out:
        raise ValueError(f"{what}: no value differs from the answer {str(truth)!r} under the scoring "
                         f"normaliser ({len(pool)} candidates)")
    return out


def prediction(row: dict, chosen_option: int, generated: str) -> str:
    """What the model answered: the chosen option (classification) or the greedy text."""
    if row["form"] == "classification" and chosen_option >= 0:
        return str(list(row["options"])[chosen_option])
    return str(generated)


@metric("row_correct")
def row_correct(rows: Sequence[dict], chosen_option: Sequence[int], generated: Sequence[str]) -> np.ndarray:
    """Per row: classification rows by the chosen option (== answer), other forms by `text_match`
    of the greedy answer. `chosen_option` is -1 for rows that are not classification."""
    if not len(rows) == len(chosen_option) == len(generated):
        raise ValueError(f"row_correct: {len(rows)} rows, {len(chosen_option)} choices, {len(generated)} texts")
    out = np.zeros(len(rows), dtype=bool)
    for i, (row, c, g) in enumerate(zip(rows, chosen_option, generated)):
        if row["form"] == "classification" and int(c) >= 0:
            out[i] = str(list(row["options"])[int(c)]) == str(row["answer"])
        else:
            out[i] = text_match(g, row["answer"])
    return out


@metric("mia_features")
def mia_features(max_prob, neg_entropy, margin) -> np.ndarray:
    """[n, 3] features of the paper's attack: max p, -entropy, top1-top2 margin (per sample,
    averaged over its answer tokens by the scorer)."""
    cols = [to_numpy(x).ravel() for x in (max_prob, neg_entropy, margin)]
    if len({c.size for c in cols}) != 1:
        raise ValueError(f"mia_features: lengths {[c.size for c in cols]} differ")
    return np.stack(cols, axis=1)
