"""Stage `selected`: the headline metrics of the focus method (`method` in params.yaml).

Reads only that method's evaluation and the UQS weights, so `dvc exp run -S method=kl` reruns
this stage alone and `dvc exp show` compares methods side by side.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from mmunlearn.io import write_json, write_metrics
from mmunlearn.metrics.columns import headline_metrics, row_metrics

HEADLINE = (*(i.name for i in row_metrics()), "KR", "KR_probe")
CONTINUAL = ("effectiveness", "historical_preservation", "retained_utility_final")


def _mean(values) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return round(float(np.mean(vals)), 6) if vals else None


def select(params: dict, eval_root="outputs/eval", weights_path="outputs/analysis/uqs_weights.json",
           out_dir="outputs/selected") -> dict:
    from mmunlearn.analysis import uqs_scores

    method = params["method"]
    docs = [json.loads(p.read_text()) for p in sorted((Path(eval_root) / method).glob("*.json"))]
    rows = pd.DataFrame([d["row"] for d in docs])
    weights = json.loads(Path(weights_path).read_text())


    def headline(frame: pd.DataFrame) -> dict:
        # UQS of the method means, as in the ranking table
        means = {k: _mean(frame[k]) for k in HEADLINE if k in frame}
        ok = all(means.get(k) is not None for k in headline_metrics())
        means["UQS"] = round(float(uqs_scores(pd.DataFrame([means]), weights).iloc[0]), 6) if ok else None
        return means

    out: dict = {"method": method, "models": len(rows), **headline(rows)}
    out["by_dataset"] = {ds: headline(g) for ds, g in rows.groupby("dataset", sort=True)}
    cont = [d["continual"]["metrics"] for d in docs if d.get("continual")]
    if cont:
        out["continual"] = {k: _mean(c[k] for c in cont) for k in CONTINUAL}
        out["continual"]["utility_std"] = _mean(c["stability"]["utility_std"] for c in cont)
        out["continual"]["largest_drop"] = _mean(c["stability"]["largest_drop"] for c in cont)
        first = next(d for d in docs if d.get("continual"))
        write_json(Path(out_dir) / "continual.json",
                   [{"stage": e["stage"], "task": e["task"], "value": e["accuracy"]}
                    for e in first["continual"]["matrix"]])
    write_json(Path(out_dir) / "details.json", out)
    write_metrics(Path(out_dir) / "metrics.json", {k: out.get(k) for k in ("UQS", "FA", "RA", "MIA", "KR")})
    return out
