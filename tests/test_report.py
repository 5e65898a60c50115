"""Stage report: figures and the offline page from hand-built results (hand-computed continual
matrices, determinism, no external reference), and a smoke run's page in a real headless Chromium
(no console error, no network request, a non-blank screenshot, one table row per method)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmunlearn.report import build_report, continual_matrices, retained_utility

METHODS = ["ga", "npo", "finetune_retain"]
METRICS = ["FA", "RA", "MIA", "AD", "JS"]


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def hand_built(root: Path) -> Path:
    """The files `report` reads, for three methods, two seeds and two continual tasks."""
    out = root / "outputs"
    ranking = {m: {**{k: 0.1 * (i + 1) for k in METRICS + ["UQS"]},
                   **{f"{k}_rank": i + 1 for k in METRICS + ["UQS"]}} for i, m in enumerate(METHODS)}
    tau = [[1.0 if i == j else (None if "JS" in (METRICS[i], METRICS[j]) else -0.5) for j in range(5)] for i in range(5)]
    rel = {m: {"spearman_r": 0.1 * k, "p_value": 0.5} for k, m in enumerate(METRICS)}
    curve = {"0": {"retained_utility": [1.0, 0.8, 0.6]}, "1": {"retained_utility": [1.0, 0.6, 0.4]}}
    _write(out / "ranking_table.json", ranking)
    _write(out / "analysis_results.json", {
        "finding1_tau_matrix": {"metric_names": METRICS, "tau_matrix": tau, "p_matrix": [[0.01] * 5] * 5},
        "finding2_modality_compare": {"finding": "Metric agreement is 0.1 lower in multimodal settings."},
        "finding3_reliability": rel, "finding3_reliability_within": {**rel, "JS": {"spearman_r": None}},
        "stability": {"mean_tau": 0.5, "sd_tau": 0.1}, "n_models": 9, "continual": {m: curve for m in METHODS}})
    _write(out / "uqs_weights.json", {m: 0.2 for m in METRICS})
    _write(out / "sanity.json", {"ok": False, "n_failed": 1, "checks": [
        {"name": "finetuned_fa", "ok": True, "detail": "fine-tuned FA >= 0.9"},
        {"name": "oracle_mia", "ok": False, "detail": "oracle MIA 0.7 outside [0.4, 0.6]"}]})
    _write(out / "dataset_stats.json", {"profiles": 24, "images": 228, "qa": 384, "forget_tasks": 2})
    cells = [(0, 1), (0, 2), (1, 1), (2, 1), (2, 2)]   # A[t][i] for i <= t (stage 0: fine-tuned)
    seed_rows = lambda acc: [{"stage": t, "task": i, "accuracy": a} for (t, i), a in zip(cells, acc)]
    _write(out / "analysis" / "continual.json", {m: {"0": seed_rows([1, 1, 0.5, 0.2, 0.4]),
                                                      "1": seed_rows([1, 1, 0.3, 0.0, 0.2])} for m in METHODS})
    return root


def test_continual_matrices_and_utility_are_seed_means():
    rows = lambda a: [{"stage": t, "task": i, "accuracy": a[(t, i)]} for (t, i) in a]
    A = continual_matrices({"ga": {"0": rows({(0, 1): 1.0, (0, 2): 1.0, (1, 1): 0.5, (2, 1): 0.2, (2, 2): 0.4}),
                                   "1": rows({(0, 1): 1.0, (0, 2): 0.8, (1, 1): 0.3, (2, 1): 0.0, (2, 2): 0.2})}})["ga"]
    want = np.array([[1.0, 0.9], [0.4, np.nan], [0.1, 0.3]])
    np.testing.assert_allclose(A, want, equal_nan=True)
    assert retained_utility({"ga": {"0": {"retained_utility": [1.0, 0.8]}, "1": {"retained_utility": [1.0, 0.6]}}}) \
        == {"ga": [1.0, pytest.approx(0.7)]}


def test_report_is_offline_complete_and_byte_identical(tmp_path):
    root = hand_built(tmp_path / "a")
    out = build_report({"scale": "smoke", "methods": METHODS}, root / "outputs", commit="abc123")
    page = (out / "index.html").read_text()
    assert "http://" not in page and "https://" not in page
    assert "<link" not in page and "<script src" not in page and "@import" not in page and "url(" not in page
    assert page.count("<tr data-method=") == len(METHODS)
    assert "FAIL" in page and "oracle_mia" in page and "commit: abc123" in page
    assert "AD is the most reliable metric within datasets (Spearman rho +0.30)" in page  # null JS left out
    assert "the most contradictory pair is FA-AD (tau -0.50)" in page  # JS pairs are null: not counted
    names = {"tau_heatmap", "reliability", "uqs_weights", "first_task", "retained_utility",
             *(f"continual_{m}" for m in METHODS)}
    assert {p.stem for p in (out / "figures").glob("*.png")} == names
    assert {p.stem for p in (out / "figures").glob("*.svg")} == names
    again = build_report({"scale": "smoke", "methods": METHODS}, hand_built(tmp_path / "b") / "outputs", commit="abc123")
    for p in sorted(out.rglob("*.*")):
        assert p.read_bytes() == (again / p.relative_to(out)).read_bytes(), p.name


def test_missing_input_is_one_line_error(tmp_path):
    from mmunlearn.errors import UserError

    root = hand_built(tmp_path)
    (root / "outputs" / "sanity.json").unlink()
    with pytest.raises(UserError, match="sanity.json is missing"):
        build_report({}, root / "outputs")
    assert not (root / "outputs" / "report").exists()


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "headless Chromium is needed (`make test` / .ci/run install it: apt-get install -y chromium)"
    return path


@pytest.mark.slow
def test_smoke_report_in_a_real_browser(released_pipeline, tmp_path):
    """What a person sees: the page loads from disk with no console error and no network request,
    renders a non-blank screenshot, and lists every method of the run."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from tests.conftest import RELEASED_METHODS

    index = released_pipeline / "outputs" / "report" / "index.html"
    shot = tmp_path / "report.png"
    errors, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(index.as_uri(), wait_until="load")
        methods = page.eval_on_selector_all("#ranking tbody tr", "rows => rows.map(r => r.dataset.method)")
        page.click("#ranking th:nth-child(2)")  # sort by UQS: the script runs without error
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    print(f"report screenshot: {shot}")
    assert errors == []
    assert [u for u in requests if not u.startswith(("file://", "data:"))] == []
    assert sorted(methods) == sorted(RELEASED_METHODS)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.01   # not blank: text and figures drawn
