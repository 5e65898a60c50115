"""Sanity self-check of a pipeline run (SPEC section 8): the figures the analysis rests on must
describe a run that worked, or its taus and weights say nothing about the metrics.

Checks, thresholds under `analysis.sanity` in params.yaml:
- `finetuned_fa`: the fine-tuned model knows every variant's forget set (FA >= finetuned_fa_min);
- `holdout_chance`: it has not seen the holdout facts (holdout_acc <= holdout_max: near chance);
- `oracle_fa`: every oracle, retrained without the forget set, does not know it either
  (FA <= holdout_acc + oracle_fa_margin);
- `oracle_mia`: the membership attack cannot tell forget from holdout on an oracle (MIA in
  oracle_mia = [lo, hi], around the 0.5 of a model that never saw the forget set);
- `forget_moved`: every method lowered FA (fine-tuned FA - method FA >= min_forget_drop, every
  variant and seed); methods in `neglect` (the retain-only fine-tuning baseline, which forgets by
  neglect alone) are reported, not failed;
- `continual_baseline`: the continual matrix's stage 0, A[0][t], equals the fine-tuned model's
  accuracy on task t's forget questions (within 1e-6).

A missing or malformed input fails its check with a detail naming the file; it never crashes."""
from __future__ import annotations

import json
import math
import numbers
import sys
from pathlib import Path

import pandas as pd

from mmunlearn.data.splits import VARIANTS
from mmunlearn.errors import UserError

A_TOLERANCE = 1e-6
EPS = 1e-9   # bounds are compared with this slack: 1.0 - 0.8 is 0.19999999999999996


class Missing(Exception):
    """An input a check needs is absent or malformed; the message says which."""


def _json(path: Path):
    if not path.is_file():
        raise Missing(f"missing {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise Missing(f"{path} is not valid JSON ({err})") from None


def _number(doc, key: str, path: Path) -> float:
    """doc[key] as a float; Missing when absent or not a finite number."""
    if not isinstance(doc, dict) or key not in doc:
        raise Missing(f"{path} has no {key!r}")
    v = doc[key]
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
        raise Missing(f"{path}: {key} is {v!r}, not a number")
    return float(v)


def _g(x: float) -> str:
    return f"{x:.4g}"


def _result(name: str, problems: list[str], ok_detail: str, values) -> dict:
    return {"name": name, "ok": not problems, "detail": "; ".join(problems) if problems else ok_detail,
            "values": values}


class Run:
    """Where one run's outputs are and the thresholds it is held to."""

    def __init__(self, params: dict, eval_root="outputs/eval", finetune_metrics="outputs/finetune/metrics.json",
                 qa_path="data/qa.parquet"):
        self.methods = list(params["methods"])
        self.cfg = params["analysis"]["sanity"]
        self.eval_root, self.baselines = Path(eval_root), Path(eval_root) / "baselines"
        self.finetune_metrics, self.qa_path = Path(finetune_metrics), Path(qa_path)

    def holdout_acc(self) -> float:
        return _number(_json(self.finetune_metrics), "holdout_acc", self.finetune_metrics)

    def finetuned_fa(self, variant: str) -> float:
        path = self.baselines / f"finetuned_{variant}.json"
        return _number(_json(path), "FA", path)

    def oracles(self) -> list[tuple[Path, dict]]:
        paths = sorted(self.baselines.glob("oracle_*.json"))
        if not paths:
            raise Missing(f"no oracle_*.json in {self.baselines}")
        return [(p, _json(p)) for p in paths]

    def method_docs(self, method: str, pattern: str = "*.json") -> list[tuple[Path, dict]]:
        return [(p, _json(p)) for p in sorted((self.eval_root / method).glob(pattern))]


def check_finetuned_fa(run: Run) -> dict:
    lo = float(run.cfg["finetuned_fa_min"])
    values, problems = {}, []
    for v in VARIANTS:
        try:
            values[v] = run.finetuned_fa(v)
        except Missing as err:
            problems.append(str(err))
            continue
        if values[v] < lo - EPS:
            problems.append(f"{v} FA {_g(values[v])} < {lo}")
    return _result("finetuned_fa", problems, f"fine-tuned FA >= {lo} on {', '.join(VARIANTS)}", values)


def check_holdout(run: Run) -> dict:
    hi = float(run.cfg["holdout_max"])
    acc = run.holdout_acc()
    problems = [] if acc <= hi + EPS else [f"fine-tuned holdout accuracy {_g(acc)} > {hi}: not near chance"]
    return _result("holdout_chance", problems, f"fine-tuned holdout accuracy {_g(acc)} <= {hi}", {"holdout_acc": acc})


def check_oracle_fa(run: Run) -> dict:
    acc, margin = run.holdout_acc(), float(run.cfg["oracle_fa_margin"])
    bound = acc + margin
    values, problems = {}, []
    for path, doc in run.oracles():
        name = path.stem[len("oracle_"):]
        values[name] = fa = _number(doc, "FA", path)
        if fa > bound + EPS:
            problems.append(f"oracle {name} ({doc.get('variant')}) FA {_g(fa)} > holdout {_g(acc)} + {margin}")
    return _result("oracle_fa", problems, f"every oracle's FA <= holdout {_g(acc)} + {margin}", values)


def check_oracle_mia(run: Run) -> dict:
    lo, hi = (float(x) for x in run.cfg["oracle_mia"])
    values, problems = {}, []
    for path, doc in run.oracles():
        name = path.stem[len("oracle_"):]
        values[name] = mia = _number(doc, "MIA", path)
        if not lo - EPS <= mia <= hi + EPS:
            problems.append(f"oracle {name} ({doc.get('variant')}) MIA {_g(mia)} outside [{lo}, {hi}]")
    return _result("oracle_mia", problems, f"every oracle's MIA in [{lo}, {hi}]", values)


def check_forget_moved(run: Run) -> dict:
    """Fine-tuned FA - method FA per method document, failed below min_forget_drop except for
    the `neglect` methods (reported under values, never failed)."""
    least, neglect = float(run.cfg["min_forget_drop"]), set(run.cfg["neglect"])
    ft: dict[str, float | None] = {}
    values: dict[str, dict] = {}
    problems = []
    for method in run.methods:
        docs = run.method_docs(method)
        if not docs:
            problems.append(f"no evaluation documents in {run.eval_root / method}")
        for path, doc in docs:
            row = doc.get("row") if isinstance(doc, dict) else None
            if not isinstance(row, dict):
                raise Missing(f"{path} has no 'row'")
            fa = _number(row, "FA", path)
            variant = str(row.get("dataset"))
            if variant not in ft:
                try:
                    ft[variant] = run.finetuned_fa(variant)
                except Missing as err:
                    ft[variant] = None
                    problems.append(f"{err} (no fine-tuned FA for {variant})")
            if ft[variant] is None:
                continue
            drop = ft[variant] - fa
            values.setdefault(method, {})[f"{variant}/{row.get('seed')}"] = round(drop, 6)
            if drop < least - EPS and method not in neglect:
                problems.append(f"{method} {variant} seed {row.get('seed')}: FA {_g(fa)}, "
                                f"drop {_g(drop)} < {least}")
    kept = sorted(neglect & set(values))
    ok = f"every method lowered FA by >= {least}" + (f" ({', '.join(kept)}: neglect baseline, reported only)"
                                                     if kept else "")
    return _result("forget_moved", problems, ok, {"drops": values, "neglect": sorted(neglect)})


def finetuned_task_accuracy(qa: pd.DataFrame, rows: pd.DataFrame, n_tasks: int,
                            asked: dict[str, list[str]] | None = None) -> list[float | None]:
    """[None, acc_1, ..., acc_n]: the fine-tuned model's accuracy (`rows`: qa_id, correct) on the
    forget questions of each task (`asked`: on these qa_ids per task, the continual matrix's
    sample; None for a task without questions)."""
    correct = rows.drop_duplicates("qa_id").set_index("qa_id")["correct"]
    out: list[float | None] = [None]
    for t in range(1, n_tasks + 1):
        ids = asked[str(t)] if asked is not None else qa.qa_id[(qa.split == "forget") & (qa.task == t)]
        c = correct.reindex(ids)
        if c.isna().any():
            raise Missing(f"finetuned_rows.parquet lacks forget questions of task {t} ({int(c.isna().sum())} rows)")
        out.append(float(c.astype(bool).mean()) if len(c) else None)
    return out


def check_continual(run: Run) -> dict:
    docs = [(m, p, d) for m in run.methods for p, d in run.method_docs(m, "icu_seed*.json")
            if isinstance(d, dict) and isinstance(d.get("continual"), dict) and "A" in d["continual"]]
    if not docs:
        raise Missing(f"no icu document of {', '.join(run.methods)} in {run.eval_root} has continual.A")
    if not run.qa_path.is_file():
        raise Missing(f"missing {run.qa_path}")
    rows_path = run.baselines / "finetuned_rows.parquet"
    if not rows_path.is_file():
        raise Missing(f"missing {rows_path}")
    qa = pd.read_parquet(run.qa_path, columns=["qa_id", "split", "task"])
    rows = pd.read_parquet(rows_path, columns=["qa_id", "correct"])
    problems, worst = [], 0.0
    expected: list[float | None] = []
    for method, path, doc in docs:
        first = doc["continual"]["A"][0]
        expected = finetuned_task_accuracy(qa, rows, len(first) - 1, doc["continual"].get("task_rows"))
        bad = []
        for t in range(1, len(first)):
            a, e = first[t], expected[t]
            if a is None or e is None:
                if a is not e:
                    bad.append(t)
                continue
            worst = max(worst, abs(a - e))
            if abs(a - e) > A_TOLERANCE:
                bad.append(t)
        if bad:
            shown = ", ".join(f"t={t}: {first[t]} vs {expected[t]}" for t in bad[:3])
            problems.append(f"{method} {path.name}: A[0][t] differs from the fine-tuned accuracy ({shown}"
                            f"{', ...' if len(bad) > 3 else ''})")
    values = {"documents": len(docs), "tasks": len(expected) - 1, "max_abs_diff": worst,
              "finetuned_task_accuracy": expected[1:]}
    return _result("continual_baseline", problems,
                   f"A[0][t] = fine-tuned accuracy on task t in {len(docs)} documents", values)


CHECKS = {
    "finetuned_fa": check_finetuned_fa,
    "holdout_chance": check_holdout,
    "oracle_fa": check_oracle_fa,
    "oracle_mia": check_oracle_mia,
    "forget_moved": check_forget_moved,
    "continual_baseline": check_continual,
}


def sanity_checks(params: dict, eval_root="outputs/eval", finetune_metrics="outputs/finetune/metrics.json",
                  qa_path="data/qa.parquet") -> dict:
    """{"ok": every check passed, "n_failed", "checks": [{name, ok, detail, values}]} of one run's
    outputs (`dvc metrics show` lists the two headline keys only: it skips lists)."""
    run = Run(params, eval_root, finetune_metrics, qa_path)
    checks = []
    for name, fn in CHECKS.items():
        try:
            checks.append(fn(run))
        except Missing as err:
            checks.append({"name": name, "ok": False, "detail": str(err), "values": {}})
    failed = sum(not c["ok"] for c in checks)
    return {"ok": failed == 0, "n_failed": failed, "checks": checks}


def warnings_of(sanity: dict) -> list[str]:
    """One `WARNING: <check>: <detail>` line per failed check."""
    return [f"WARNING: {c['name']}: {c['detail']}" for c in sanity["checks"] if not c["ok"]]


def enforce(sanity: dict, strict: bool, where="outputs/sanity.json") -> None:
    """Print the warnings (stderr); with `strict`, any failed check is a one-line UserError."""
    lines = warnings_of(sanity)
    for line in lines:
        print(line, file=sys.stderr, flush=True)
    if strict and lines:
        failed = [c["name"] for c in sanity["checks"] if not c["ok"]]
        raise UserError(f"analysis.strict: {len(failed)} sanity check(s) failed ({', '.join(failed)}); see {where}")
