"""Stage `analyze` inside the pipeline: collect the released rows from outputs/eval, run the
SPEC section 8 analysis, add the continual summaries, write outputs/analysis/, then check the
run's own sanity (outputs/sanity.json)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from mmunlearn.io import atomic_dir, write_json, write_metrics

RELEASED = ("dataset", "method", "seed", "FA", "RA", "MIA", "AD", "JS", "retrained_distance")


def model_results(params: dict, eval_root: str | Path = "outputs/eval") -> list[dict]:
    """Every per-model evaluation JSON of the methods in `methods`, in method then file order."""
    docs = []
    for method in params["methods"]:
        for path in sorted((Path(eval_root) / method).glob("*.json")):
            docs.append(json.loads(path.read_text()))
    return docs


def released_rows(docs: list[dict]) -> list[dict]:
    """Rows of `multimodal_results.json`: the released keys, then our extra metrics."""
    rows = []
    for d in docs:
        row = d["row"]
        rows.append({**{k: row[k] for k in RELEASED}, **{k: v for k, v in row.items() if k not in RELEASED}})
    return rows


def continual_summary(docs: list[dict]) -> dict:
    """{method: {seed: continual metrics}} of the sequential (icu) runs."""
    out: dict = {}
    for d in docs:
        c = d.get("continual")
        if c:
            out.setdefault(d["row"]["method"], {})[str(d["row"]["seed"])] = c["metrics"]
    return out


def kr_samples(docs: list[dict]) -> list[dict]:
    """Per-sample KR probes of every model, tagged with the model (rows of `kr_pilot_results.json`)."""
    out = []
    for d in docs:
        model = {k: d["row"][k] for k in ("dataset", "method", "seed")}
        for sample in (d.get("kr") or {}).get("probes", []):
            out.append({**sample, **model})
    return out


def continual_matrices(docs: list[dict]) -> dict:
    """{method: {seed: long-format A[t][i] rows}} for the continual plots."""
    out: dict = {}
    for d in docs:
        if d.get("continual"):
            out.setdefault(d["row"]["method"], {})[str(d["row"]["seed"])] = d["continual"]["matrix"]
    return out


def write_leaderboard(ranking: dict, rows: list[dict], out_dir="outputs/leaderboard") -> None:
    """One DVC metrics file per method: UQS and the mean FA, RA, MIA of the ranking table, and
    the mean KR over the rows where it is defined (`dvc metrics show` / `dvc exp show`)."""
    with atomic_dir(out_dir) as tmp:
        for method, r in ranking.items():
            kr = [x["KR"] for x in rows if x["method"] == method and x.get("KR") is not None]
            write_metrics(tmp / f"{method}.json", {**{k: r[k] for k in ("UQS", "FA", "RA", "MIA")},
                                                   "KR": float(np.mean(kr)) if kr else None})


def run(params: dict, eval_root="outputs/eval", out_dir="outputs/analysis",
        unimodal_path="outputs/unimodal/results.json", sanity_path="outputs/sanity.json",
        finetune_metrics="outputs/finetune/metrics.json", qa_path="data/qa.parquet") -> dict:
    """The analysis documents in `out_dir`, then the sanity self-check in `sanity_path` (one
    `WARNING:` line per failed check; with `analysis.strict` a failure is a UserError, raised
    after every file is written)."""
    from mmunlearn.analysis import analyze
    from mmunlearn.analysis.sanity import enforce, sanity_checks

    cfg = params["analysis"]
    docs = model_results(params, eval_root)
    rows = released_rows(docs)
    # AD, JS and the oracle distance need an oracle: rows without one cannot be ranked on them
    frame = pd.DataFrame(rows).dropna(subset=list(RELEASED[3:]))
    unimodal = json.loads(Path(unimodal_path).read_text()) if Path(unimodal_path).is_file() else []
    res = analyze(frame, pd.DataFrame(unimodal) if unimodal else None, ties=cfg["ties"],
                  draws=int(cfg["stability_draws"]), seed=int(params["seed"]), reliability=cfg["reliability"])
    res["analysis_results"]["continual"] = continual_summary(docs)
    out = Path(out_dir)
    write_json(out / "multimodal_results.json", rows)
    write_json(out / "unimodal_results.json", unimodal)
    write_json(out / "kr_pilot.json", kr_samples(docs))
    write_json(out / "continual.json", continual_matrices(docs))
    for name, obj in res.items():
        write_json(out / f"{name}.json", obj)
    write_leaderboard(res["ranking_table"], rows)
    sanity = sanity_checks(params, eval_root, finetune_metrics, qa_path)
    write_json(sanity_path, sanity)
    enforce(sanity, bool(cfg["strict"]), sanity_path)
    return res
