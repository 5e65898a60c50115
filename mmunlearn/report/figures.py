"""The paper's figures from a run's released results (matplotlib, Agg): each function draws one
figure and `save` writes it as PNG and SVG with no time stamp or software tag, so the same results
give byte-identical files.

- `tau_heatmap`: Kendall tau between the metrics, with the one-sample t-test p-values (Finding 1);
- `reliability_bars`: Spearman rho of each metric against the oracle distance, within-dataset
  (combined) beside pooled (Finding 3);
- `uqs_weights`: the Unified Quality Score weights;
- `continual_matrix`: one method's upper-triangular A[t][i] (ICU-Bench Figure 4);
- `first_task`: the first task's forget accuracy after every stage, per method (ICU-Bench Figure 2);
- `retained_utility`: RA_t / RA_0 over the stages, per method.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

PNG_DPI = 110


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "mmunlearn", "font.size": 9, "figure.dpi": PNG_DPI})
    return plt


def save(fig, out_dir: Path, name: str) -> dict[str, Path]:
    """`name`.png and `name`.svg in `out_dir`; the figure is closed."""
    plt = _plt()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"png": out_dir / f"{name}.png", "svg": out_dir / f"{name}.svg"}
    fig.savefig(paths["png"], format="png", metadata={"Software": None}, bbox_inches="tight")
    fig.savefig(paths["svg"], format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight")
    plt.close(fig)
    return paths


def tau_heatmap(tau: dict):
    """`finding1_tau_matrix` ({tau_matrix, p_matrix, metric_names}); null taus (no informative
    group) are left blank and marked n/a."""
    plt = _plt()
    names = tau["metric_names"]
    t = np.array([[np.nan if v is None else v for v in row] for row in tau["tau_matrix"]], dtype=float)
    p = tau.get("p_matrix")
    fig, ax = plt.subplots(figsize=(1.1 * len(names) + 1.5, 1.0 * len(names) + 0.8))
    im = ax.imshow(t, cmap="RdBu_r", vmin=-1, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            if np.isnan(t[i, j]):
                ax.text(j, i, "n/a", ha="center", va="center", color="0.4")
                continue
            pv = None if p is None or p[i][j] is None or i == j else p[i][j]
            label = f"{t[i, j]:+.2f}" + ("" if pv is None else f"\np={pv:.2g}")
            ax.text(j, i, label, ha="center", va="center", fontsize=8, color="white" if abs(t[i, j]) > 0.6 else "black")
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set_title("Kendall tau between metrics (oriented)")
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def reliability_bars(within: dict, pooled: dict):
    """Spearman rho vs the oracle distance per metric: within-dataset (combined) and pooled."""
    plt = _plt()
    names = list(pooled)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(1.0 * len(names) + 2, 3.2))
    for off, (label, src) in zip((-0.2, 0.2), (("within-dataset", within), ("pooled", pooled))):
        vals = [np.nan if (src.get(m) or {}).get("spearman_r") is None else src[m]["spearman_r"] for m in names]
        ax.bar(x + off, vals, width=0.4, label=label)
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xticks(x, names)
    ax.set_ylim(-1, 1)
    ax.set_ylabel("Spearman rho vs -oracle distance")
    ax.set_title("Metric reliability")
    ax.legend(frameon=False)
    return fig


def uqs_weights(weights: dict):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.0 * len(weights) + 2, 3.0))
    ax.bar(list(weights), list(weights.values()), color="tab:green")
    ax.set_ylabel("weight")
    ax.set_title("Unified Quality Score weights")
    return fig


def continual_matrix(method: str, A: np.ndarray):
    """A [stages + 1, tasks] (row 0: the fine-tuned model, NaN where the task comes after the
    stage), drawn upper-triangular as in ICU-Bench: task i down, stage t across."""
    plt = _plt()
    M = A.T  # [tasks, stages + 1]
    fig, ax = plt.subplots(figsize=(0.5 * M.shape[1] + 2.5, 0.45 * M.shape[0] + 1.5))
    im = ax.imshow(np.ma.masked_invalid(M), cmap="viridis", vmin=0, vmax=1)
    if M.size <= 400:
        for (i, t), v in np.ndenumerate(M):
            if not np.isnan(v):
                ax.text(t, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < 0.6 else "black")
    ax.set_yticks(range(M.shape[0]), [str(i + 1) for i in range(M.shape[0])])
    ax.set_xticks(range(M.shape[1]), ["FT"] + [str(t) for t in range(1, M.shape[1])])
    ax.set_ylabel("task i")
    ax.set_xlabel("after stage t (FT = fine-tuned)")
    ax.set_title(f"{method}: forget accuracy A[t][i]")
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def lines(series: dict[str, list[float]], title: str, ylabel: str):
    """One line per method over the stages (0 = the fine-tuned model)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for method, ys in series.items():
        ax.plot(range(len(ys)), ys, marker="o", ms=3, label=method)
    ax.set_xlabel("stage (0 = fine-tuned)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.02, 1.05)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2, frameon=False, loc="center left", bbox_to_anchor=(1, 0.5))
    return fig
