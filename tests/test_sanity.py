"""Sanity self-check of a run (mmunlearn/analysis/sanity.py) on a tiny hand-made outputs tree:
every check passing, each one failing, missing inputs, and `analysis.strict` through the stage."""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mmunlearn.analysis.sanity import CHECKS, VARIANTS, sanity_checks, warnings_of
from mmunlearn.params import ParamError, read_yaml, validate
from tests.conftest import ROOT, set_param

METHODS = ["ga", "npo", "finetune_retain"]
NAMES = ["finetuned_fa", "holdout_chance", "oracle_fa", "oracle_mia", "forget_moved", "continual_baseline"]
# continual stage 0 = fine-tuned accuracy per task: task 1 q1 q2 both correct -> 1.0; task 2
# q3 q4 q5 -> 2/3 (rounded to 6 places as the evaluator writes it); q6 (retain), q7 (holdout)
QA = pd.DataFrame({"qa_id": [f"q{i}" for i in range(1, 8)],
                   "split": ["forget"] * 5 + ["retain", "holdout"], "task": [1, 1, 2, 2, 2, 0, 0]})
FT_ROWS = pd.DataFrame({"qa_id": [f"q{i}" for i in range(1, 7)], "correct": [True, True, True, False, True, True]})
A0 = [None, 1.0, 0.666667]
METHOD_FA = {"ga": 0.1, "npo": 0.3, "finetune_retain": 0.95}   # finetune_retain: the neglect baseline


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def outputs_tree(root: Path) -> Path:
    """A passing run: fine-tuned FA 1.0 everywhere, holdout .05, three oracles (FA .1, MIA .5),
    every method document of METHODS for icu/fiu/umu seed 0, continual A on icu."""
    _write(root / "outputs/finetune/metrics.json", {"holdout_acc": 0.05, "trained_acc": 1.0})
    base = root / "outputs/eval/baselines"
    for v in VARIANTS:
        _write(base / f"finetuned_{v}.json", {"FA": 1.0, "RA": 1.0, "MIA": 0.9, "oracle": f"{v}_x"})
        _write(base / f"oracle_{v}_x.json", {"variant": v, "FA": 0.1, "RA": 0.9, "MIA": 0.5})
    base.mkdir(parents=True, exist_ok=True)
    FT_ROWS.to_parquet(base / "finetuned_rows.parquet")
    (root / "data").mkdir(exist_ok=True)
    QA.to_parquet(root / "data/qa.parquet")
    for i, method in enumerate(METHODS):
        for v in VARIANTS:
            row = {"dataset": v, "method": method, "seed": 0, "FA": METHOD_FA[method], "RA": 0.8 - 0.1 * i,
                   "MIA": 0.4 + 0.05 * i, "AD": 1.0 + i, "JS": 0.1 * (i + 1), "retrained_distance": 0.2 + 0.1 * i}
            doc = {"row": row, "FA": row["FA"], "MIA": row["MIA"]}
            if v == "icu":
                doc["continual"] = {"A": [list(A0), [None, 0.2, None], [None, 0.3, 0.1]],
                                    "metrics": {"effectiveness": 0.8}, "matrix": []}
            _write(root / f"outputs/eval/{method}/{v}_seed0.json", doc)
    return root


def params() -> dict:
    p = read_yaml(ROOT / "params.yaml")
    p["methods"], p["method"] = list(METHODS), "npo"
    return p


def run_checks(root: Path, p: dict | None = None) -> dict:
    return sanity_checks(p or params(), root / "outputs/eval", root / "outputs/finetune/metrics.json",
                         root / "data/qa.parquet")


def by_name(res: dict) -> dict:
    return {c["name"]: c for c in res["checks"]}


def test_passing_run(tmp_path):
    res = run_checks(outputs_tree(tmp_path))
    assert [c["name"] for c in res["checks"]] == NAMES == list(CHECKS)
    assert res["ok"] is True and res["n_failed"] == 0, warnings_of(res)
    c = by_name(res)
    assert c["finetuned_fa"]["values"] == {"icu": 1.0, "fiu": 1.0, "umu": 1.0}
    assert c["holdout_chance"]["values"] == {"holdout_acc": 0.05}
    assert c["oracle_mia"]["values"] == {"icu_x": 0.5, "fiu_x": 0.5, "umu_x": 0.5}
    # drops: ga 1 - .1 = .9, npo .7, finetune_retain .05 (< .2, but the neglect baseline: reported only)
    drops = c["forget_moved"]["values"]["drops"]
    assert drops["ga"] == {"icu/0": 0.9, "fiu/0": 0.9, "umu/0": 0.9}
    assert drops["finetune_retain"]["fiu/0"] == pytest.approx(0.05)
    assert "finetune_retain: neglect baseline" in c["forget_moved"]["detail"]
    v = c["continual_baseline"]["values"]
    assert v["documents"] == 3 and v["tasks"] == 2
    assert v["finetuned_task_accuracy"] == [1.0, pytest.approx(2 / 3)]
    assert v["max_abs_diff"] < 1e-6   # 0.666667 vs 2/3: rounding only
    assert warnings_of(res) == []


def test_continual_baseline_reads_the_matrix_sample(tmp_path):
    """A matrix built on a per-task sample (`continual.task_rows`) is checked on that sample: task 2
    asked q4 alone (fine-tuned wrong), so A[0][2] must be 0, not the task's 2/3."""
    root = outputs_tree(tmp_path)
    for method in METHODS:
        path = root / f"outputs/eval/{method}/icu_seed0.json"
        doc = json.loads(path.read_text())
        doc["continual"]["task_rows"] = {"1": ["q1"], "2": ["q4"]}
        path.write_text(json.dumps(doc))
    c = by_name(run_checks(root))["continual_baseline"]
    assert not c["ok"] and "t=2: 0.666667 vs 0.0" in c["detail"]
    for method in METHODS:
        _set(root / f"outputs/eval/{method}/icu_seed0.json", A01=0.0)   # A01 edits A[0][2]
    c = by_name(run_checks(root))["continual_baseline"]
    assert c["ok"] and c["values"]["finetuned_task_accuracy"] == [1.0, 0.0], c


def _set(path: Path, **kv) -> None:
    doc = json.loads(path.read_text())
    node = doc
    for k, v in kv.items():
        if k == "row_FA":
            node["row"]["FA"] = v
        elif k == "A01":
            node["continual"]["A"][0][2] = v
        else:
            node[k] = v
    path.write_text(json.dumps(doc))


B = "outputs/eval/baselines"
FAILURES = [
    # (edit, failing checks, words in the first failing check's detail)
    (lambda r: _set(r / B / "finetuned_fiu.json", FA=0.85), {"finetuned_fa"}, "fiu FA 0.85 < 0.9"),
    (lambda r: _set(r / "outputs/finetune/metrics.json", holdout_acc=0.3), {"holdout_chance"},
     "holdout accuracy 0.3 > 0.2: not near chance"),
    (lambda r: _set(r / B / "oracle_umu_x.json", FA=0.2), {"oracle_fa"}, "oracle umu_x (umu) FA 0.2 > holdout 0.05 + 0.1"),
    (lambda r: _set(r / B / "oracle_icu_x.json", MIA=0.7), {"oracle_mia"}, "oracle icu_x (icu) MIA 0.7 outside [0.4, 0.6]"),
    (lambda r: _set(r / B / "oracle_icu_x.json", MIA=0.35), {"oracle_mia"}, "MIA 0.35 outside"),
    (lambda r: _set(r / "outputs/eval/npo/fiu_seed0.json", row_FA=0.9), {"forget_moved"},
     "npo fiu seed 0: FA 0.9, drop 0.1 < 0.2"),
    (lambda r: _set(r / "outputs/eval/ga/icu_seed0.json", A01=0.5), {"continual_baseline"},
     "ga icu_seed0.json: A[0][t] differs from the fine-tuned accuracy (t=2: 0.5 vs 0.666"),
    # missing or malformed inputs: a failed check naming the file, never a crash
    (lambda r: (r / B / "finetuned_umu.json").unlink(), {"finetuned_fa", "forget_moved"}, "/finetuned_umu.json"),
    (lambda r: (r / "outputs/finetune/metrics.json").unlink(), {"holdout_chance", "oracle_fa"},
     "/outputs/finetune/metrics.json"),
    (lambda r: [p.unlink() for p in (r / B).glob("oracle_*.json")], {"oracle_fa", "oracle_mia"}, "no oracle_*.json in"),
    (lambda r: _set(r / B / "oracle_fiu_x.json", MIA=None), {"oracle_mia"}, "MIA is None, not a number"),
    (lambda r: shutil.rmtree(r / "outputs/eval/npo"), {"forget_moved"}, "no evaluation documents in"),
    (lambda r: (r / "outputs/eval/ga/fiu_seed0.json").write_text("{not json"), {"forget_moved"}, "is not valid JSON"),
    (lambda r: (r / "data/qa.parquet").unlink(), {"continual_baseline"}, "/data/qa.parquet"),
    (lambda r: (r / B / "finetuned_rows.parquet").unlink(), {"continual_baseline"}, "finetuned_rows.parquet"),
    (lambda r: [_set(r / f"outputs/eval/{m}/icu_seed0.json", continual=None) for m in METHODS],
     {"continual_baseline"}, "has continual.A"),
]


@pytest.mark.parametrize("edit, failing, needle", FAILURES)
def test_each_check_fails(tmp_path, edit, failing, needle):
    root = outputs_tree(tmp_path)
    edit(root)
    res = run_checks(root)
    assert res["ok"] is False and res["n_failed"] == len(failing)
    assert {c["name"] for c in res["checks"] if not c["ok"]} == failing
    first = next(c for c in res["checks"] if not c["ok"])
    assert needle in first["detail"], first["detail"]
    lines = warnings_of(res)
    assert len(lines) == len(failing) and lines[0] == f"WARNING: {first['name']}: {first['detail']}"
    json.dumps(res, allow_nan=False)


def test_thresholds_come_from_params(tmp_path):
    root = outputs_tree(tmp_path)
    p = params()
    p["analysis"]["sanity"]["neglect"] = []           # the neglect baseline is now held to the drop
    p["analysis"]["sanity"]["finetuned_fa_min"] = 1.0  # FA 1.0 still passes (>=)
    c = by_name(run_checks(root, p))
    assert c["finetuned_fa"]["ok"] and not c["forget_moved"]["ok"]
    assert c["forget_moved"]["detail"].count("finetune_retain") == 3   # icu, fiu, umu
    p["analysis"]["sanity"]["oracle_mia"] = [0.5, 0.5]  # 0.5 is inside a closed range
    assert by_name(run_checks(root, p))["oracle_mia"]["ok"]
    # a drop exactly at the bound passes although 1.0 - 0.8 is 0.19999999999999996 in floats
    _set(root / "outputs/eval/ga/umu_seed0.json", row_FA=0.8)
    assert by_name(run_checks(root))["forget_moved"]["ok"]
    _set(root / "outputs/eval/ga/umu_seed0.json", row_FA=0.81)
    assert "ga umu seed 0: FA 0.81, drop 0.19 < 0.2" in by_name(run_checks(root))["forget_moved"]["detail"]


@pytest.mark.parametrize("key, value, needle", [
    ("ties", "average", "analysis.ties='average'"),
    ("reliability", "both", "analysis.reliability='both'"),
    ("strict", "yes", "analysis.strict='yes'"),
    ("sanity.holdout_max", 2, "analysis.sanity.holdout_max=2"),
    ("sanity.oracle_mia", [0.6, 0.4], "analysis.sanity.oracle_mia=[0.6, 0.4]"),
    ("sanity.oracle_mia", 0.5, "analysis.sanity.oracle_mia=0.5"),
    ("sanity.neglect", ["bogus"], "analysis.sanity.neglect='bogus'"),
])
def test_bad_analysis_params(key, value, needle):
    p = copy.deepcopy(params())
    node = p["analysis"]
    *parents, last = key.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    with pytest.raises(ParamError) as err:
        validate(p)
    assert needle in str(err.value) and "\n" not in str(err.value)


def _stage(root: Path) -> subprocess.CompletedProcess:
    """`python -m stages.analyze` (the DVC stage) in `root`, checking it never imports torch."""
    code = ("import sys; from stages.analyze import main\n"
            "try:\n    main([])\n"
            "finally:\n    assert 'torch' not in sys.modules, 'torch imported'\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True)


@pytest.mark.parametrize("strict", [False, True])
def test_stage_writes_sanity_and_strict_fails(tmp_path, strict):
    root = outputs_tree(tmp_path)
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    set_param(root, "methods", METHODS)
    set_param(root, "method", "npo")
    set_param(root, "analysis.strict", strict)
    proc = _stage(root)   # a passing run: exit 0 either way, no warning
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" not in proc.stderr
    assert json.loads((root / "outputs/sanity.json").read_text())["ok"] is True
    _set(root / B / "oracle_icu_x.json", MIA=0.7)
    (root / "outputs/analysis/ranking_table.json").unlink()
    proc = _stage(root)
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == "WARNING: oracle_mia: oracle icu_x (icu) MIA 0.7 outside [0.4, 0.6]"
    sanity = json.loads((root / "outputs/sanity.json").read_text())   # written before failing
    assert sanity["ok"] is False and [c["name"] for c in sanity["checks"] if not c["ok"]] == ["oracle_mia"]
    assert (root / "outputs/analysis/ranking_table.json").is_file()
    if strict:
        assert proc.returncode == 2 and len(lines) == 2
        assert lines[1] == ("error: analysis.strict: 1 sanity check(s) failed (oracle_mia); "
                            "see outputs/sanity.json")
    else:
        assert proc.returncode == 0 and len(lines) == 1
