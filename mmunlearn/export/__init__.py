"""Stage `export`: the released files of SPEC section 9 in outputs/, a dataset card, plot data.

The seven files keep the released keys and shapes (extra keys are ours): multimodal_results,
unimodal_results, uqs_weights, ranking_table, analysis_results, kr_pilot_results and
blip2_minimal_summary.
"""
from __future__ import annotations

import json
from pathlib import Path

from mmunlearn.io import atomic_dir, atomic_path, write_json

RELEASED_FILES = {
    "multimodal": "multimodal_results.json",
    "unimodal": "unimodal_results.json",
    "uqs_weights": "uqs_weights.json",
    "ranking": "ranking_table.json",
    "analysis": "analysis_results.json",
    "kr_pilot": "kr_pilot_results.json",
    "blip2": "blip2_minimal_summary.json",
}
PAIRS = (("FA", "RA"), ("FA", "AD"), ("RA", "AD"))


def _load(path: Path):
    return json.loads(path.read_text())


def tau_pairs(analysis: dict) -> dict:
    """{"FA_RA": tau, ...} from a tau matrix (rounded as in the released summary)."""
    m = analysis["finding1_tau_matrix"]
    names = m["metric_names"]
    out = {}
    for a, b in PAIRS:
        v = m["tau_matrix"][names.index(a)][names.index(b)]
        out[f"{a}_{b}"] = None if v is None else round(v, 2)
    return out


def blip2_summary(analysis: dict, rows: list[dict] | None = None) -> dict:
    """Cross-architecture summary in the released shape: Kendall tau of the oriented method
    rankings by FA, RA and AD over the branch's rows (tie-aware tau-b, so a pair with a constant
    metric is undefined: null), the main run's taus for reference, and whether the contradiction
    replicates (the primary pair's tau is negative; RA-AD is primary when FA is tied)."""
    ref = tau_pairs(analysis)
    if not rows:
        return {"blip2_results": [], "blip2_tau": {"FA_RA": None, "FA_AD": None, "RA_AD": None,
                                                   "primary_pair": None, "primary_tau": None},
                "llava_tau_reference": ref, "contradiction_replicated": None, "fa_tied": None,
                "note": "cross-architecture branch not run in this pipeline configuration"}
    import pandas as pd

    from mmunlearn.analysis.agreement import tau_matrix
    from mmunlearn.analysis.table import num

    frame = pd.DataFrame(rows)
    names = ("FA", "RA", "AD")
    tau, _ = tau_matrix(frame, ties="tau_b", metrics=names)
    taus = {f"{a}_{b}": (None if num(tau[names.index(a), names.index(b)]) is None
                         else round(float(tau[names.index(a), names.index(b)]), 4)) for a, b in PAIRS}
    fa_tied = bool(any(g["FA"].duplicated().any() for _, g in frame.groupby(["dataset", "seed"])))
    primary = "FA,AD" if taus["FA_AD"] is not None else ("RA,AD (FA tied)" if taus["RA_AD"] is not None else None)
    primary_tau = taus["FA_AD"] if primary == "FA,AD" else taus["RA_AD"] if primary else None
    replicated = None if primary_tau is None else bool(primary_tau < 0)
    model = ", ".join(sorted({str(r.get("model", "")) for r in rows}))
    methods = sorted({r["method"] for r in rows})
    note = (f"{len(methods)}-method minimal validation on {model} ({', '.join(methods)}; datasets "
            f"{', '.join(sorted({str(r['dataset']) for r in rows}))}). Taus are tie-aware (tau-b): a pair with a "
            f"constant metric is undefined (null). " +
            ("No primary pair is defined (FA and RA tied)." if primary is None else
             f"Primary signal: tau({primary}) = {primary_tau}; contradiction "
             f"{'replicated' if replicated else 'not replicated'} (output-surface metric vs oracle-alignment AD)."))
    return {"blip2_results": rows, "blip2_tau": {**taus, "primary_pair": primary, "primary_tau": primary_tau},
            "llava_tau_reference": ref, "contradiction_replicated": replicated, "fa_tied": fa_tied, "note": note}


def plot_data(analysis: dict, weights: dict, continual: dict, out: Path) -> None:
    """Long-format tables for `dvc plots`: tau heatmap, UQS weights, one continual matrix per method."""
    m = analysis["finding1_tau_matrix"]
    names = m["metric_names"]
    write_json(out / "tau_matrix.json", [{"metric_x": a, "metric_y": b, "value": m["tau_matrix"][i][j]}
                                         for i, a in enumerate(names) for j, b in enumerate(names)])
    write_json(out / "uqs_weights.json", [{"metric": k, "weight": v} for k, v in weights.items()])
    for method, seeds in continual.items():
        seed = sorted(seeds, key=int)[0]
        write_json(out / "continual" / f"{method}.json",
                   [{"stage": e["stage"], "task": e["task"], "value": e["accuracy"]} for e in seeds[seed]])


def card(params: dict, analysis: dict, ranking: dict, stats: dict, n_rows: int) -> str:
    """outputs/README.md: a dataset card whose front matter lists the seven configs."""
    configs = "\n".join(f"- config_name: {name}\n  data_files:\n  - split: train\n    path: outputs/{f}"
                        for name, f in RELEASED_FILES.items())
    rel = analysis["finding3_reliability"]
    tau = tau_pairs(analysis)
    table = "\n".join(
        f"| {m} | {r['FA']:.3f} | {r['RA']:.3f} | {r['MIA']:.3f} | {r['AD']:.3f} | {r['JS']:.4f} | {r['UQS']:.4f} | {r['UQS_rank']} |"
        for m, r in sorted(ranking.items(), key=lambda kv: kv[1]["UQS_rank"]))
    reli = "\n".join(f"| {m} | {_fmt(v['spearman_r'])} | {_fmt(v['p_value'])} |" for m, v in rel.items())
    return f"""---
license: cc-by-4.0
task_categories:
- image-text-to-text
language:
- en
tags:
- machine-unlearning
- multimodal
- benchmark
- evaluation
- privacy
- vlm
pretty_name: Multimodal Unlearning Evaluation Benchmark (pipeline run)
size_categories:
- n<1K
configs:
{configs}
---

# Multimodal unlearning evaluation results

Evaluation outputs of one run of this pipeline: {n_rows} unlearned models ({len(params['methods'])}
methods x variants icu/fiu/umu x seeds {params['seeds']}), model `{params['model']}`, scale
`{params['scale']}` ({stats.get('profiles')} fictitious profiles, {stats.get('images')} document
images, {stats.get('qa')} QA pairs, {stats.get('forget_tasks')} sequential forget tasks). The
files keep the released format of *Metric Unreliability in Multimodal Machine Unlearning*, so the
paper's analysis runs on them unchanged:
`python -m stages.analyze --results outputs/multimodal_results.json --out DIR`.

| File | Contents |
|---|---|
| `multimodal_results.json` | one row per unlearned model: dataset, method, seed, FA, RA, MIA, AD, JS, retrained_distance (+ KR, ROUGE-L) |
| `unimodal_results.json` | the same rows for text-only / classifier runs (empty when those branches are not run) |
| `uqs_weights.json` | UQS weights from each metric's Spearman reliability vs the oracle distance |
| `ranking_table.json` | per method: mean metrics, their ranks, UQS and its rank |
| `analysis_results.json` | Kendall tau and p matrices, contradiction table, modality comparison, reliability, stability, continual summaries |
| `kr_pilot_results.json` | knowledge-recoverability probes of forget samples the models fail |
| `blip2_minimal_summary.json` | cross-architecture check (BLIP-2 family) |

## Findings of this run

Kendall tau between method rankings: FA-RA {tau['FA_RA']}, FA-AD {tau['FA_AD']}, RA-AD {tau['RA_AD']}.

| method | FA | RA | MIA | AD | JS | UQS | UQS rank |
|---|---|---|---|---|---|---|---|
{table}

Reliability (Spearman rho vs -oracle distance):

| metric | rho | p |
|---|---|---|
{reli}

## Notes

- Profiles are fictitious and generated; no real person's data is included.
- Regenerate everything with `dvc repro`; metric definitions are in SPEC section 7 of the repository.
"""


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def release(params: dict, analysis_dir="outputs/analysis", out_dir="outputs",
            stats_path="outputs/dataset_stats.json", crossarch_path="outputs/crossarch/results.json") -> dict:
    a = Path(analysis_dir)
    out = Path(out_dir)
    analysis = _load(a / "analysis_results.json")
    weights = _load(a / "uqs_weights.json")
    ranking = _load(a / "ranking_table.json")
    rows = _load(a / "multimodal_results.json")
    unimodal = _load(a / "unimodal_results.json") if (a / "unimodal_results.json").is_file() else []
    docs = {
        "multimodal_results.json": rows,
        "unimodal_results.json": unimodal,
        "uqs_weights.json": weights,
        "ranking_table.json": ranking,
        "analysis_results.json": analysis,
        "kr_pilot_results.json": _load(a / "kr_pilot.json"),
        "blip2_minimal_summary.json": blip2_summary(
            analysis, _load(Path(crossarch_path)) if Path(crossarch_path).is_file() else None),
    }
    for name, obj in docs.items():
        write_json(out / name, obj)
    with atomic_path(out / "README.md") as tmp:
        tmp.write_text(card(params, analysis, ranking, _load(Path(stats_path)), len(rows)))
    with atomic_dir(out / "plots") as tmp:
        plot_data(analysis, weights, _load(a / "continual.json"), tmp)
    return docs
