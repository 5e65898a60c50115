"""Stage `report`: the run's released results as paper-ready figures and one offline page.

Reads what `export` released (`ranking_table.json`, `analysis_results.json`, `uqs_weights.json`),
the continual matrices (`outputs/analysis/continual.json`), `sanity.json` and
`dataset_stats.json`, and writes `outputs/report/`: `figures/*.png|svg` (`report.figures`) and
`index.html`, a self-contained leaderboard (no external script, style, font or image: figures are
embedded as data URIs) with the sortable ranking table, the sanity checks, one sentence per finding,
the figures, and the run's params and commit in its footer.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from mmunlearn.metrics.columns import headline_metrics
from mmunlearn.report import figures, page

RANK_COLUMNS = ("UQS", *headline_metrics())


def _read(path: Path):
    from mmunlearn.errors import UserError

    if not path.is_file():
        raise UserError(f"report: {path} is missing (run `dvc repro export` first)")
    return json.loads(path.read_text())


def continual_matrices(continual: dict) -> dict[str, np.ndarray]:
    """{method: A [stages + 1, tasks]} from `analysis/continual.json`'s long rows, the mean over
    seeds per cell; NaN where a task comes after the stage."""
    out = {}
    for method, by_seed in sorted(continual.items()):
        rows = [r for seed_rows in by_seed.values() for r in seed_rows]
        if not rows:
            continue
        n = max(r["task"] for r in rows)
        total, count = np.zeros((n + 1, n)), np.zeros((n + 1, n))
        for r in rows:
            total[r["stage"], r["task"] - 1] += r["accuracy"]
            count[r["stage"], r["task"] - 1] += 1
        with np.errstate(invalid="ignore"):
            out[method] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return out


def retained_utility(summary: dict) -> dict[str, list[float]]:
    """{method: RA_t / RA_0 per stage}, the mean over seeds."""
    out = {}
    for method, by_seed in sorted(summary.items()):
        curves = [s["retained_utility"] for s in by_seed.values() if s.get("retained_utility")]
        if curves:
            width = min(len(c) for c in curves)
            out[method] = [float(np.mean([c[t] for c in curves if c[t] is not None])) for t in range(width)]
    return out


def findings(analysis: dict, ranking: dict) -> list[str]:
    """One sentence per finding of the analysis."""
    tau = analysis["finding1_tau_matrix"]
    names, t = tau["metric_names"], tau["tau_matrix"]
    pairs = [(t[i][j], names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))
             if t[i][j] is not None]
    out = []
    if pairs:
        low = min(pairs)
        out.append(f"Finding 1 (agreement): the mean pairwise Kendall tau between metrics is "
                   f"{np.mean([p[0] for p in pairs]):+.2f}; the most contradictory pair is {low[1]}-{low[2]} "
                   f"(tau {low[0]:+.2f}).")
    modality = analysis.get("finding2_modality_compare") or {}
    if modality.get("finding"):
        out.append(f"Finding 2 (modality): {modality['finding']}")
    within = {m: v["spearman_r"] for m, v in (analysis.get("finding3_reliability_within") or {}).items()
              if v.get("spearman_r") is not None}
    if within:
        best, worst = max(within, key=within.get), min(within, key=within.get)
        out.append(f"Finding 3 (reliability): against the oracle, {best} is the most reliable metric within "
                   f"datasets (Spearman rho {within[best]:+.2f}) and {worst} the least ({within[worst]:+.2f}).")
    stability = analysis.get("stability") or {}
    if ranking:
        top = min(ranking, key=lambda m: ranking[m]["UQS_rank"])
        extra = (f"; under 100 random weightings its ranking keeps Kendall tau {stability['mean_tau']:.2f} "
                 f"+- {stability['sd_tau']:.2f} with the reference" if "mean_tau" in stability else "")
        out.append(f"Leaderboard: {top} ranks first by UQS ({ranking[top]['UQS']:.3f}){extra}.")
    return out


def make_figures(out: Path, analysis: dict, weights: dict, continual: dict) -> list[tuple[str, str]]:
    """Every figure as PNG + SVG under `out`; [(name, caption)] in page order."""
    made = [("tau_heatmap", "Kendall tau between metrics with p-values (Finding 1)"),
            ("reliability", "Spearman rho against the oracle distance: within-dataset and pooled (Finding 3)"),
            ("uqs_weights", "Unified Quality Score weights")]
    figures.save(figures.tau_heatmap(analysis["finding1_tau_matrix"]), out, "tau_heatmap")
    figures.save(figures.reliability_bars(analysis.get("finding3_reliability_within") or {},
                                          analysis["finding3_reliability"]), out, "reliability")
    figures.save(figures.uqs_weights(weights), out, "uqs_weights")
    mats = continual_matrices(continual)
    if mats:
        first = {m: [float(v) for v in A[:, 0]] for m, A in mats.items()}
        figures.save(figures.lines(first, "First task's forget accuracy across stages", "A[t][1]"), out, "first_task")
        made.append(("first_task", "The first task's forget accuracy after every stage (ICU-Bench Figure 2)"))
    utility = retained_utility(analysis.get("continual") or {})
    if utility:
        figures.save(figures.lines(utility, "Retained utility across stages", "RA_t / RA_0"), out, "retained_utility")
        made.append(("retained_utility", "Retained utility RA_t / RA_0 over the continual stages"))
    for method, A in mats.items():
        figures.save(figures.continual_matrix(method, A), out, f"continual_{method}")
        made.append((f"continual_{method}", f"{method}: upper-triangular continual matrix A[t][i]"))
    return made


FOOTER_PARAMS = ("scale", "model", "seed", "seeds", "methods", "analysis.ties", "analysis.reliability")


def footer(params: dict, commit: str | None) -> str:
    """The run's params that decide the figures, and the commit they came from."""
    def get(dotted: str):
        node = params
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node
    shown = "; ".join(f"{k}={json.dumps(get(k))}" for k in FOOTER_PARAMS)
    return html.escape(f"params: {shown} | commit: {commit or 'unknown'}")


def build_report(params: dict, outputs: str | Path = "outputs", commit: str | None = None) -> Path:
    """outputs/report/ (written whole or not at all): figures and index.html."""
    from mmunlearn.io import atomic_dir

    outputs = Path(outputs)
    ranking = _read(outputs / "ranking_table.json")
    analysis = _read(outputs / "analysis_results.json")
    weights = _read(outputs / "uqs_weights.json")
    sanity = _read(outputs / "sanity.json")
    stats = _read(outputs / "dataset_stats.json")
    continual = _read(outputs / "analysis" / "continual.json")
    with atomic_dir(outputs / "report") as tmp:
        made = make_figures(tmp / "figures", analysis, weights, continual)
        summary = (f"{len(ranking)} methods, {analysis.get('n_models', '?')} unlearned models; dataset: "
                   f"{stats.get('profiles', '?')} profiles, {stats.get('images', '?')} images, "
                   f"{stats.get('qa', '?')} QA, {stats.get('forget_tasks', '?')} forget tasks.")
        doc = page.render("mmunlearn: unlearning metrics leaderboard", summary,
                          page.ranking_table(ranking, RANK_COLUMNS), page.sanity_list(sanity),
                          findings(analysis, ranking), page.figure_tags(tmp / "figures", made),
                          footer(params, commit))
        (tmp / "index.html").write_text(doc, encoding="utf-8")
    return outputs / "report"
