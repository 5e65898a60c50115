"""Evaluate -> analyze -> export -> selected on the smoke pipeline: released files, caching,
re-analysis round trip, metric sanity."""
from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import RELEASED_METHODS, run

RELEASED_ROW = {"dataset", "method", "seed", "FA", "RA", "MIA", "AD", "JS", "retrained_distance"}
SEVEN = ("multimodal_results.json", "unimodal_results.json", "uqs_weights.json", "ranking_table.json",
         "analysis_results.json", "kr_pilot_results.json", "blip2_minimal_summary.json")
METRICS = ["FA", "RA", "MIA", "AD", "JS"]


def load(repo, rel):
    return json.loads((repo / rel).read_text())


def test_seven_released_files_with_released_keys(released_pipeline):
    out = released_pipeline / "outputs"
    for name in SEVEN:
        assert (out / name).is_file(), name
    rows = load(released_pipeline, "outputs/multimodal_results.json")
    assert len(rows) == len(RELEASED_METHODS) * 3  # methods x (icu, fiu, umu) x one seed
    for r in rows:
        assert RELEASED_ROW <= set(r), r
        assert all(isinstance(r[k], (int, float)) for k in METRICS + ["retrained_distance"]), r
    assert {r["dataset"] for r in rows} == {"icu", "fiu", "umu"}
    assert set(load(released_pipeline, "outputs/uqs_weights.json")) == set(METRICS)
    assert abs(sum(load(released_pipeline, "outputs/uqs_weights.json").values()) - 1) < 1e-9
    ranking = load(released_pipeline, "outputs/ranking_table.json")
    assert set(ranking) == set(RELEASED_METHODS)
    for entry in ranking.values():
        assert {f"{m}_rank" for m in METRICS} | set(METRICS) | {"UQS", "UQS_rank"} <= set(entry)
    analysis = load(released_pipeline, "outputs/analysis_results.json")
    tau = analysis["finding1_tau_matrix"]
    assert tau["metric_names"] == METRICS
    assert len(tau["tau_matrix"]) == 5 and len(tau["p_matrix"][0]) == 5
    assert tau["tau_matrix"][0][0] == 1.0
    for key in ("finding1_contradiction", "finding2_modality_compare", "finding3_reliability"):
        assert key in analysis
    assert set(analysis["finding3_reliability"]) == set(METRICS)
    assert set(analysis["continual"]) == set(RELEASED_METHODS)
    modality = analysis["finding2_modality_compare"]
    assert all(isinstance(modality[k], float) for k in ("multimodal_mean_tau", "unimodal_mean_tau", "delta"))
    unimodal = load(released_pipeline, "outputs/unimodal_results.json")
    assert {r["dataset"] for r in unimodal} == {"text_icu", "text_fiu", "text_umu", "cifar10_class", "cifar10_random"}
    assert all(RELEASED_ROW <= set(r) for r in unimodal)
    blip2 = load(released_pipeline, "outputs/blip2_minimal_summary.json")
    assert {"blip2_results", "blip2_tau", "llava_tau_reference", "contradiction_replicated"} <= set(blip2)
    assert blip2["llava_tau_reference"]["FA_AD"] == round(tau["tau_matrix"][0][3], 2)
    # rows from the tiny BLIP-2 of stage crossarch, one per method of `crossarch.methods`
    assert [(r["model"], r["method"]) for r in blip2["blip2_results"]] == [
        ("tiny-blip2", "ga"), ("tiny-blip2", "finetune_retain")]
    for r in blip2["blip2_results"]:
        assert all(isinstance(r[k], float) for k in ("FA", "RA", "AD", "retrained_distance"))
    assert set(blip2["blip2_tau"]) == {"FA_RA", "FA_AD", "RA_AD", "primary_pair", "primary_tau"}
    assert blip2["contradiction_replicated"] in (True, False) or blip2["blip2_tau"]["primary_tau"] is None
    kr = load(released_pipeline, "outputs/kr_pilot_results.json")
    for sample in kr:
        assert {"sample_id", "question", "answer", "direct_prediction", "direct_correct", "fa_correct",
                "probes", "kr_score"} <= set(sample)
        assert sample["fa_correct"] is False
        assert 0 <= sample["kr_score"] <= 1
        assert sample["kr_score"] == pytest.approx(
            sum(p["correct"] for p in sample["probes"].values()) / len(sample["probes"]))


def test_dataset_card_lists_the_seven_configs(released_pipeline):
    text = (released_pipeline / "outputs" / "README.md").read_text()
    front = text.split("---")[1]
    for name in SEVEN:
        assert f"path: outputs/{name}" in front, name
    assert front.count("config_name:") == 7


def test_reanalysis_cli_round_trip(released_pipeline, tmp_path):
    repo = released_pipeline
    proc = run(["python", "-m", "stages.analyze", "--results", "outputs/multimodal_results.json",
                "--out", str(tmp_path)], repo)
    assert proc.returncode == 0
    ours = load(repo, "outputs/analysis_results.json")
    again = json.loads((tmp_path / "analysis_results.json").read_text())
    for key in ("finding1_tau_matrix", "finding1_contradiction", "finding3_reliability", "stability"):
        assert again[key] == ours[key], key
    assert json.loads((tmp_path / "uqs_weights.json").read_text()) == load(repo, "outputs/uqs_weights.json")
    assert json.loads((tmp_path / "ranking_table.json").read_text()) == load(repo, "outputs/ranking_table.json")


def test_metrics_separate_unlearned_from_finetuned(released_pipeline):
    repo = released_pipeline
    ft = load(repo, "outputs/eval/baselines/finetuned_icu.json")
    oracle = load(repo, "outputs/eval/baselines/oracle_icu_task003.json")
    assert ft["FA"] >= 0.8 and oracle["FA"] <= 0.2, (ft["FA"], oracle["FA"])
    assert ft["AD"] > 0 and ft["JS"] > 0
    ga = load(repo, "outputs/eval/ga/icu_seed0.json")
    assert ga["row"]["FA"] < ft["FA"]
    assert 0 <= ga["mia"]["loss_auc"] <= 1 and 0 <= ga["MIA"] <= 1
    c = ga["continual"]
    assert c["saved_stages"] == [1, 2, 3]
    assert c["A"][0][1] >= 0.8  # the fine-tuned model knows task 1
    assert c["A"][1][1] < c["A"][0][1]  # the stage that unlearns task 1 lowers it
    assert c["metrics"]["effectiveness"] > 0
    assert {"AccF", "AccR", "RLF", "RLR"} <= set(ga["modality"])


def test_second_repro_is_a_noop(released_pipeline):
    out = run(["dvc", "repro"], released_pipeline).stdout
    assert "Running stage" not in out, out


def test_exp_run_method_reruns_only_selected(released_pipeline, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(released_pipeline, repo, symlinks=True)
    before = load(repo, "outputs/selected/metrics.json")
    assert before["method"] == "npo"
    out = run(["dvc", "exp", "run", "-S", "method=kl"], repo).stdout
    ran = sorted(line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage"))
    assert ran == ["selected"], out
    after = load(repo, "outputs/selected/metrics.json")
    kl_rows = [r for r in load(repo, "outputs/multimodal_results.json") if r["method"] == "kl"]
    assert after["method"] == "kl"
    assert after["FA"] == pytest.approx(sum(r["FA"] for r in kl_rows) / len(kl_rows), abs=1e-6)


def test_evaluation_is_deterministic(released_pipeline, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(released_pipeline, repo, symlinks=True)
    before = (repo / "outputs" / "eval" / "ga" / "fiu_seed0.json").read_bytes()
    run(["dvc", "repro", "-f", "-s", "unlearn@ga"], repo)
    assert (repo / "outputs" / "eval" / "ga" / "fiu_seed0.json").read_bytes() == before
