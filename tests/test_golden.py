"""The smoke run's released rows against a recorded copy (tests/golden/): a refactor that changes
a published number shows here, by metric and row.

Record a new copy only for a change that is meant to move the numbers, and say why in the commit:
`MMUNLEARN_RECORD_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py` (the test then skips).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden" / "smoke_multimodal_results.json"
KEY = ("dataset", "method", "seed")
# Same params and seed give identical metrics on CPU (README); a refactor that only reorders float
# operations moves a continuous metric (AD, JS, retrained_distance, MIA's attack) in its last
# digits, far below this. A rate over a few rows moves by at least 1/rows when one row changes.
REL, ABS = 1e-4, 1e-6


def differences(got: list[dict], want: list[dict]) -> list[str]:
    """One line per row or value of `want` that `got` lacks or holds differently."""
    index = {tuple(r[k] for k in KEY): r for r in got}
    out = [f"rows: {len(got)} != {len(want)}"] if len(got) != len(want) else []
    for w in want:
        key = tuple(w[k] for k in KEY)
        g = index.get(key)
        if g is None:
            out.append(f"{key}: missing")
            continue
        for name, value in sorted(w.items()):
            if not same(g.get(name), value):
                out.append(f"{key} {name}: {g.get(name)!r} != {value!r}")
    return out


def same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=REL, abs_tol=ABS)
    return a == b


def test_differences_names_what_moved():
    want = [{"dataset": "icu", "method": "ga", "seed": 0, "FA": 0.25, "AD": 1.0, "KR": None}]
    assert differences(want, want) == []
    assert differences([{**want[0], "AD": 1.0 + 1e-7}], want) == []       # float reordering
    assert differences([{**want[0], "FA": 0.3125}], want) == ["('icu', 'ga', 0) FA: 0.3125 != 0.25"]
    assert differences([{**want[0], "KR": 0.0}], want) == ["('icu', 'ga', 0) KR: 0.0 != None"]
    assert differences([], want) == ["rows: 0 != 1", "('icu', 'ga', 0): missing"]


def test_released_rows_match_the_recorded_run(released_pipeline):
    got = json.loads((released_pipeline / "outputs" / "multimodal_results.json").read_text())
    if os.environ.get("MMUNLEARN_RECORD_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"recorded {GOLDEN}")
    assert GOLDEN.is_file(), f"no recorded copy: run with MMUNLEARN_RECORD_GOLDEN=1 ({GOLDEN})"
    assert differences(got, json.loads(GOLDEN.read_text())) == []
