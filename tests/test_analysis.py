"""Metric-agreement analysis (SPEC section 8) on hand-built tables whose figures are worked out
by hand in the comments; the CLI round trip as a subprocess."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import t as student_t

from mmunlearn.analysis import METRICS, analyze, uqs_scores
from mmunlearn.analysis.agreement import group_taus, mean_pairwise_tau, metric_clusters, tau_matrix
from mmunlearn.analysis.table import check_rows
from mmunlearn.analysis.uqs import ranking_table, reliability, uqs_weights, weight_stability
from mmunlearn.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
approx = pytest.approx

# --- GRID: 3 methods (A, B, C) x 2 datasets x 2 seeds -------------------------------------
# Oriented rank of (A, B, C) per (dataset, seed) group, 1 = best (FA, MIA, AD, JS: lower is
# better; RA: higher is better), i.e. the best-to-worst order:
#            FA    RA    MIA   AD    JS
#   g1 d1/1  ABC   ABC   ABC   CBA   CBA
#   g2 d1/2  ABC   BAC   ACB   BCA   CBA
#   g3 d2/1  ABC   ABC   BAC   CBA   CAB
#   g4 d2/2  ABC   ACB   ABC   CAB   CBA
# For 3 items tau = 1 - 2 D / 3, D = number of discordant pairs (0 -> 1, 1 -> 1/3, 2 -> -1/3,
# 3 -> -1). Group taus and means:
#   FA-RA   D = 0,1,0,1 -> 1, 1/3, 1, 1/3        mean  2/3
#   FA-MIA  D = 0,1,1,0 -> 1, 1/3, 1/3, 1        mean  2/3
#   FA-AD   D = 3,2,3,2 -> -1, -1/3, -1, -1/3    mean -2/3
#   FA-JS   D = 3,3,2,3 -> -1, -1, -1/3, -1      mean -5/6
#   RA-MIA  D = 0,2,1,1 -> 1, -1/3, 1/3, 1/3     mean  1/3
#   RA-AD   D = 3,1,3,1 -> -1, 1/3, -1, 1/3      mean -1/3
#   RA-JS   D = 3,2,2,2 -> -1, -1/3, -1/3, -1/3  mean -1/2
#   MIA-AD  D = 3,3,2,2 -> -1, -1, -1/3, -1/3    mean -2/3
#   MIA-JS  D = 3,2,3,3 -> -1, -1/3, -1, -1      mean -5/6
#   AD-JS   D = 0,1,1,1 -> 1, 1/3, 1/3, 1/3      mean  1/2
GRID_VALUES = {  # (dataset, seed): {metric: (A, B, C)}
    ("d1", 1): {"FA": (.1, .2, .3), "RA": (.9, .8, .7), "MIA": (.4, .5, .6), "AD": (3, 2, 1), "JS": (.3, .2, .1)},
    ("d1", 2): {"FA": (.1, .2, .3), "RA": (.8, .9, .7), "MIA": (.4, .6, .5), "AD": (3, 1, 2), "JS": (.3, .2, .1)},
    ("d2", 1): {"FA": (.1, .2, .3), "RA": (.9, .8, .7), "MIA": (.5, .4, .6), "AD": (3, 2, 1), "JS": (.2, .3, .1)},
    ("d2", 2): {"FA": (.1, .2, .3), "RA": (.9, .7, .8), "MIA": (.4, .5, .6), "AD": (2, 3, 1), "JS": (.3, .2, .1)},
}
THIRD = 1 / 3
GRID_TAU = [  # FA, RA, MIA, AD, JS
    [1, 2 / 3, 2 / 3, -2 / 3, -5 / 6],
    [2 / 3, 1, THIRD, -THIRD, -1 / 2],
    [2 / 3, THIRD, 1, -2 / 3, -5 / 6],
    [-2 / 3, -THIRD, -2 / 3, 1, 1 / 2],
    [-5 / 6, -1 / 2, -5 / 6, 1 / 2, 1],
]


def grid(distance: float = 0.5) -> pd.DataFrame:
    rows = []
    for (dataset, seed), values in GRID_VALUES.items():
        for i, method in enumerate("ABC"):
            rows.append({"dataset": dataset, "method": method, "seed": seed,
                         **{m: float(values[m][i]) for m in METRICS}, "retrained_distance": distance})
    return pd.DataFrame(rows)


# --- SMALL: 2 methods x 1 dataset x 2 seeds, four models m1..m4, no ties in any column ----
SMALL = pd.DataFrame({
    "dataset": ["d"] * 4, "method": ["A", "A", "B", "B"], "seed": [1, 2, 1, 2],
    "FA": [.1, .2, .3, .4], "RA": [.9, .7, .8, .6], "MIA": [.2, .1, .4, .3],
    "AD": [4.0, 3.0, 2.0, 1.0], "JS": [.3, .4, .1, .2],
    "retrained_distance": [.1, .2, .3, .4],
    "extra": ["ignored"] * 4,
})
# Spearman over m1..m4 of the oriented metric vs -distance (ranks of -distance: 4, 3, 2, 1);
# no ties, so rho = 1 - 6 sum d^2 / (n (n^2 - 1)) = 1 - sum d^2 / 10, and for n = 4 scipy's
# p = 2 sf_t(|t|, df 2) with t = rho sqrt(2 / (1 - rho^2)); sf_t(t, 2) = 1/2 - t / (2 sqrt(t^2+2))
# gives p = 1 - t / sqrt(t^2 + 2) = 1 - |rho|.
#   -FA  ranks 4,3,2,1  d = 0,0,0,0      rho =  1    p = 0
#    RA  ranks 4,2,3,1  d = 0,-1,1,0     rho =  0.8  p = 0.2
#   -MIA ranks 3,4,1,2  d = -1,1,-1,1    rho =  0.6  p = 0.4
#   -AD  ranks 1,2,3,4  d = -3,-1,1,3    rho = -1    p = 0
#   -JS  ranks 2,1,4,3  d = -2,-2,2,2    rho = -0.6  p = 0.4
SMALL_RHO = {"FA": 1.0, "RA": 0.8, "MIA": 0.6, "AD": -1.0, "JS": -0.6}
SMALL_P = {"FA": 0.0, "RA": 0.2, "MIA": 0.4, "AD": 0.0, "JS": 0.4}
# Weights: floor max(rho, 0.01) -> 1, .8, .6, .01, .01; sum 2.42.
SMALL_W = {"FA": 1 / 2.42, "RA": .8 / 2.42, "MIA": .6 / 2.42, "AD": .01 / 2.42, "JS": .01 / 2.42}


def test_tau_matrix_ordinal_by_hand():
    tau, p = tau_matrix(check_rows(grid()))
    assert tau.tolist() == [[approx(x) for x in row] for row in GRID_TAU]
    # p: t-test of the four group taus against 0 (df 3).
    # FA-RA taus 1, 1/3, 1, 1/3: mean 2/3, deviations +-1/3, s^2 = 4 (1/9) / 3 = 4/27,
    #   se = sqrt(4/27) / 2 = 1 / (3 sqrt 3), t = (2/3) / se = 2 sqrt 3. FA-AD is its mirror.
    p_2sqrt3 = 2 * student_t.sf(2 * math.sqrt(3), 3)
    assert p[0, 1] == approx(p_2sqrt3) and p[0, 3] == approx(p_2sqrt3)
    assert p_2sqrt3 == approx(0.0405, abs=1e-4)
    # FA-JS taus -1, -1, -1/3, -1: mean -5/6, deviations -1/6 x3 and 1/2, SS = 3/36 + 9/36 = 1/3,
    #   s^2 = 1/9, se = (1/3) / 2 = 1/6, t = -5.
    assert p[0, 4] == approx(2 * student_t.sf(5, 3))
    assert (tau == tau.T).all() and (p == p.T).all()
    assert [tau[i, i] for i in range(5)] == [1.0] * 5 and [p[i, i] for i in range(5)] == [0.0] * 5


def test_clusters_by_hand():
    # 1 - tau: FA-RA 1/3, FA-MIA 1/3, RA-MIA 2/3, AD-JS 1/2; every FA/RA/MIA-to-AD/JS distance
    # >= 4/3. Average linkage merges {FA, RA} (1/3), then MIA at (1/3 + 2/3) / 2 = 1/2 and
    # {AD, JS} at 1/2, long before any cross merge: the 2-cluster cut is the two blocks.
    tau, _ = tau_matrix(check_rows(grid()))
    assert metric_clusters(tau) == [["FA", "RA", "MIA"], ["AD", "JS"]]


def test_analyze_grid_documents():
    res = analyze(grid())
    a = res["analysis_results"]
    assert set(res) == {"analysis_results", "uqs_weights", "ranking_table"}
    assert a["n_models"] == 12 and a["ties"] == "ordinal"
    assert a["finding1_tau_matrix"]["metric_names"] == list(METRICS)
    assert a["finding1_tau_matrix"]["tau_matrix"][0][3] == approx(-2 / 3)
    # constant retrained_distance: every rho is undefined -> null, weights all at the floor
    # 0.01 / 0.05 = 0.2
    assert all(v == {"spearman_r": None, "p_value": None} for v in a["finding3_reliability"].values())
    assert res["uqs_weights"] == {m: approx(0.2) for m in METRICS}
    # method means (4 groups): A FA .1 RA (.9+.8+.9+.9)/4=.875 MIA (.4+.4+.5+.4)/4=.425
    #   AD (3+3+3+2)/4=2.75 JS (.3+.3+.2+.3)/4=.275; B .2 .8 .5 2.0 .225; C .3 .725 .575 1.25 .1
    # ranks: FA/RA/MIA A<B<C; AD/JS C<B<A (lower is better).
    assert a["finding1_contradiction"] == [
        {"method": "A", "FA_score": 0.1, "RA_score": 0.875, "MIA_score": 0.425, "AD_score": 2.75,
         "JS_score": 0.275, "FA_rank": 1, "RA_rank": 1, "MIA_rank": 1, "AD_rank": 3, "JS_rank": 3},
        {"method": "B", "FA_score": 0.2, "RA_score": 0.8, "MIA_score": 0.5, "AD_score": 2.0,
         "JS_score": 0.225, "FA_rank": 2, "RA_rank": 2, "MIA_rank": 2, "AD_rank": 2, "JS_rank": 2},
        {"method": "C", "FA_score": 0.3, "RA_score": 0.725, "MIA_score": 0.575, "AD_score": 1.25,
         "JS_score": 0.1, "FA_rank": 3, "RA_rank": 3, "MIA_rank": 3, "AD_rank": 1, "JS_rank": 1},
    ]
    # UQS of the means, weights 0.2:
    #   A .2 (.9 + .875 + .575 + 1/3.75 + .725) = .2 (3.075 + .266667) = .668333
    #   B .2 (.8 + .8 + .5 + 1/3 + .775)        = .2 (2.875 + .333333) = .641667
    #   C .2 (.7 + .725 + .425 + 1/2.25 + .9)   = .2 (2.75 + .444444)  = .638889
    t = res["ranking_table"]
    assert {m: (r["UQS"], r["UQS_rank"]) for m, r in t.items()} == {
        "A": (0.6683, 1), "B": (0.6417, 2), "C": (0.6389, 3)}
    assert t["A"]["RA"] == approx(0.875) and t["C"]["AD"] == approx(1.25)
    assert (t["A"]["AD_rank"], t["C"]["AD_rank"], t["C"]["JS_rank"]) == (3, 1, 1)
    assert a["clusters"] == [["FA", "RA", "MIA"], ["AD", "JS"]]
    json.dumps(res, allow_nan=False)  # JSON-safe: no NaN anywhere


def test_reliability_and_weights_by_hand():
    rows = check_rows(SMALL)
    rel = reliability(rows)
    assert {m: v["spearman_r"] for m, v in rel.items()} == {m: approx(r) for m, r in SMALL_RHO.items()}
    assert {m: v["p_value"] for m, v in rel.items()} == {m: approx(p, abs=1e-12) for m, p in SMALL_P.items()}
    w = uqs_weights(rel)
    assert w == {m: approx(x) for m, x in SMALL_W.items()}
    assert sum(w.values()) == approx(1.0)


def test_uqs_scores_and_ranking_table_by_hand():
    rows = check_rows(SMALL)
    # m1: (1 (1-.1) + .8 (.9) + .6 (1-.2) + .01 / (1+4) + .01 (1-.3)) / 2.42
    #   = (.9 + .72 + .48 + .002 + .007) / 2.42 = 2.109 / 2.42
    assert uqs_scores(rows, SMALL_W).iloc[0] == approx(2.109 / 2.42)
    assert uqs_scores(rows, SMALL_W).tolist()[3] == approx((.6 + .48 + .42 + .01 / 2 + .008) / 2.42)
    # means: A FA .15 RA .8 MIA .15 AD 3.5 JS .35; B FA .35 RA .7 MIA .35 AD 1.5 JS .15
    #   UQS A = (.85 + .64 + .51 + .01/4.5 + .0065) / 2.42 = 2.0087222 / 2.42 = .830051
    #   UQS B = (.65 + .56 + .39 + .01/2.5 + .0085) / 2.42 = 1.6125 / 2.42    = .666322
    t = ranking_table(rows, SMALL_W)
    assert t == {
        "A": {"FA_rank": 1, "FA": approx(.15), "RA_rank": 1, "RA": approx(.8), "MIA_rank": 1, "MIA": approx(.15),
              "AD_rank": 2, "AD": approx(3.5), "JS_rank": 2, "JS": approx(.35), "UQS": 0.8301, "UQS_rank": 1},
        "B": {"FA_rank": 2, "FA": approx(.35), "RA_rank": 2, "RA": approx(.7), "MIA_rank": 2, "MIA": approx(.35),
              "AD_rank": 1, "AD": approx(1.5), "JS_rank": 1, "JS": approx(.15), "UQS": 0.6663, "UQS_rank": 2},
    }


def test_ranking_uqs_is_of_method_means_not_mean_of_model_uqs():
    rows = pd.DataFrame({
        "dataset": ["d"] * 4, "method": ["A", "A", "B", "B"], "seed": [1, 2, 1, 2],
        "FA": [0., 0., .5, .5], "RA": [1., 1., .5, .5], "MIA": [0., 0., .5, .5],
        "AD": [0., 2., 1., 1.], "JS": [0., 0., .5, .5], "retrained_distance": [.1, .2, .3, .4]})
    equal = {m: 0.2 for m in METRICS}
    # A means: FA 0 RA 1 MIA 0 AD 1 JS 0 -> .2 (1 + 1 + 1 + 1/2 + 1) = .9 (released convention);
    # the mean of its model UQS would be (.2 * 5 + .2 (4 + 1/3)) / 2 = .933333.
    # B: .2 (.5 + .5 + .5 + 1/2 + .5) = .5
    t = ranking_table(check_rows(rows), equal)
    assert (t["A"]["UQS"], t["B"]["UQS"]) == (0.9, 0.5)
    assert uqs_scores(check_rows(rows), equal).tolist() == [approx(1.0), approx(.2 * (4 + 1 / 3)), approx(.5), approx(.5)]


def tie_table() -> pd.DataFrame:
    # Two groups; A and B tie on FA (lower better) in both, RA orders A > B > C in both.
    # Group 2 lists its rows C, B, A: method order (first appearance) is still A, B, C.
    g1 = [("A", .1, .9), ("B", .1, .8), ("C", .3, .7)]
    g2 = [("C", .3, .7), ("B", .1, .8), ("A", .1, .9)]
    rows = [{"dataset": "d", "method": m, "seed": s, "FA": fa, "RA": ra, "MIA": .5, "AD": 1.0, "JS": .1,
             "retrained_distance": .1} for s, g in ((1, g1), (2, g2)) for m, fa, ra in g]
    return check_rows(pd.DataFrame(rows))


def test_ties_ordinal_vs_average():
    rows = tie_table()
    # ordinal: FA ranks (A, B, C) = 1, 2, 3 in both groups (A before B by method order, also in
    # group 2 whose rows are reversed) = RA ranks -> tau 1, 1.
    assert group_taus(rows, "FA", "RA", "ordinal") == [1.0, 1.0]
    # average: FA ranks 1.5, 1.5, 3 vs RA 1, 2, 3. Pairs AB tied in FA, AC and BC concordant:
    # tau_b = (2 - 0) / sqrt((3 - 1)(3 - 0)) = 2 / sqrt 6 = .8165 in both groups.
    assert group_taus(rows, "FA", "RA", "average") == [approx(2 / math.sqrt(6))] * 2
    # MIA, AD, JS are constant: ordinal ranks them by method order (1, 2, 3) -> tau(MIA, RA) = 1;
    # average gives constant ranks, tau undefined in every group -> null, p null.
    o = analyze(rows, ties="ordinal")["analysis_results"]["finding1_tau_matrix"]
    a = analyze(rows, ties="average")["analysis_results"]["finding1_tau_matrix"]
    assert o["tau_matrix"][0][1] == approx(1.0) and o["tau_matrix"][1][2] == approx(1.0)
    assert a["tau_matrix"][0][1] == approx(2 / math.sqrt(6))
    assert a["tau_matrix"][1][2] is None and a["p_matrix"][1][2] is None
    assert a["tau_matrix"][2][2] == 1.0 and a["p_matrix"][2][2] == 0.0
    # identical group taus: t-test of zero spread -> p 0 (ordinal: 1, 1), NaN for tau 0, 0.
    assert o["p_matrix"][0][1] == 0.0


def test_average_skips_undefined_groups_in_mean():
    rows = tie_table()
    # make RA constant in group 2 only: average tau undefined there, the mean is group 1's alone
    rows.loc[rows["seed"] == 2, "RA"] = .5
    tau, p = tau_matrix(rows, "average")
    assert tau[0, 1] == approx(2 / math.sqrt(6))
    assert math.isnan(p[0, 1])  # one defined group: no t-test


def test_stability_is_seeded():
    rows = check_rows(grid())
    w = {m: 0.2 for m in METRICS}
    s1, s2 = weight_stability(rows, w, 100, seed=7), weight_stability(rows, w, 100, seed=7)
    assert s1 == s2
    assert s1["draws"] == 100 and s1["seed"] == 7 and len(s1["taus"]) == 100
    # 3 methods without UQS ties: each tau is 1, 1/3, -1/3 or -1
    assert all(min(abs(t - v) for v in (1, THIRD, -THIRD, -1)) < 1e-12 for t in s1["taus"])
    mean = sum(s1["taus"]) / 100
    assert s1["mean_tau"] == approx(mean)
    assert s1["sd_tau"] == approx(math.sqrt(sum((t - mean) ** 2 for t in s1["taus"]) / 100))
    assert weight_stability(rows, w, 100, seed=8)["taus"] != s1["taus"]
    assert analyze(grid(), seed=3)["analysis_results"]["stability"] == analyze(grid(), seed=3)["analysis_results"]["stability"]


# Unimodal rows u1..u3 (raw values; MIA constant, JS NaN for u3):
#   FA .1 .2 .3 | RA .2 .1 .3 | MIA .3 .3 .3 | AD 1 2 3 | JS .5 .4 NaN
# Pooled Kendall tau of raw values, pairs with a constant metric skipped, NaN models dropped:
#   FA-RA 1/3 (u1u2 discordant), FA-AD 1, FA-JS -1 (u1, u2), RA-AD 1/3, RA-JS 1, AD-JS -1
#   mean = (1/3 + 1 - 1 + 1/3 + 1 - 1) / 6 = 1/9
UNIMODAL = pd.DataFrame({
    "dataset": ["cifar"] * 3, "method": ["A", "B", "C"], "seed": [1, 1, 1],
    "FA": [.1, .2, .3], "RA": [.2, .1, .3], "MIA": [.3, .3, .3], "AD": [1., 2., 3.], "JS": [.5, .4, None]})
# SMALL pooled (raw, n = 4, tau = (C - D) / 6):
#   FA-RA -2/3, FA-MIA 1/3, FA-AD -1, FA-JS -1/3, RA-MIA 0, RA-AD 2/3, RA-JS 0, MIA-AD -1/3,
#   MIA-JS -1, AD-JS 1/3; sum -2, mean -0.2
SMALL_POOLED = -0.2


def test_modality_by_hand():
    assert mean_pairwise_tau(check_rows(SMALL)) == approx(SMALL_POOLED)
    m = analyze(SMALL, UNIMODAL)["analysis_results"]["finding2_modality_compare"]
    assert m["multimodal_mean_tau"] == approx(-0.2)
    assert m["unimodal_mean_tau"] == approx(1 / 9)
    assert m["delta"] == approx(1 / 9 + 0.2)  # unimodal - multimodal = .3111
    assert m["finding"].startswith("Metric agreement is 0.311 lower in multimodal settings")


def test_modality_without_unimodal_is_null():
    for uni in (None, pd.DataFrame()):
        m = analyze(SMALL, uni)["analysis_results"]["finding2_modality_compare"]
        assert m["unimodal_mean_tau"] is None and m["delta"] is None and m["grouped_delta"] is None
        assert m["multimodal_mean_tau"] == approx(-0.2)
        assert "No unimodal" in m["finding"]


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d.drop(columns=["AD"]), "missing column 'AD'"),
    (lambda d: d.assign(FA=[.1, "high", .3, .4]), "column 'FA' has a non-numeric value 'high'"),
    (lambda d: d.assign(JS=[.1, float("nan"), .3, .4]), "column 'JS' has a non-finite value nan"),
    (lambda d: d.assign(retrained_distance=[.1, None, .3, .4]), "'retrained_distance'"),
    (lambda d: d.assign(method="A", seed=[1, 2, 3, 4]), "need at least 2 methods to compare, got 1 (A)"),
    (lambda d: d.assign(seed=1), "model listed twice"),
    (lambda d: d.assign(method=["A", None, "B", "B"]), "column 'method' has an empty value"),
    (lambda d: d.assign(AD=[4.0, -1.0, 2.0, 1.0]), "column 'AD' has a negative value -1.0"),
])
def test_bad_input_is_one_line_user_error(mutate, needle):
    with pytest.raises(UserError) as err:
        analyze(mutate(SMALL.copy()))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_bad_options():
    with pytest.raises(UserError, match="ties"):
        analyze(SMALL, ties="dense")
    with pytest.raises(UserError, match="draws"):
        analyze(SMALL, draws=0)


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    # run the stage and check it never imported torch (no model is needed)
    code = ("import sys; from stages.analyze import main\n"
            "try:\n    main(sys.argv[1:])\n"
            "finally:\n    assert 'torch' not in sys.modules, 'torch imported'\n")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True)


def test_cli_round_trip(tmp_path):
    results, uni = tmp_path / "multimodal_results.json", tmp_path / "unimodal_results.json"
    results.write_text(SMALL.drop(columns=["extra"]).to_json(orient="records"))
    uni.write_text(json.dumps(json.loads(UNIMODAL.to_json(orient="records"))))
    out = tmp_path / "out"
    proc = _cli("--results", str(results), "--unimodal", str(uni), "--out", str(out), "--draws", "10")
    assert proc.returncode == 0, proc.stderr
    docs = {n: json.loads((out / f"{n}.json").read_text(), parse_constant=lambda c: pytest.fail(c))
            for n in ("analysis_results", "uqs_weights", "ranking_table")}
    assert docs["uqs_weights"] == {m: approx(x) for m, x in SMALL_W.items()}
    assert docs["ranking_table"]["A"]["UQS"] == 0.8301
    assert docs["analysis_results"]["finding2_modality_compare"]["delta"] == approx(1 / 9 + 0.2)
    assert len(docs["analysis_results"]["stability"]["taus"]) == 10
    # the module entry point too
    proc = subprocess.run([sys.executable, "-m", "stages.analyze", "--results", str(results), "--out",
                           str(tmp_path / "out2")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out2" / "ranking_table.json").exists()


@pytest.mark.parametrize("content, needle", [
    ('[{"dataset": "d", "method": "A", "seed": 1, "FA": 0.1}]', "missing column 'RA'"),
    ("not json", "is not valid JSON"),
    ('{"rows": []}', "must be a JSON list of row objects"),
    (None, "cannot read"),
])
def test_cli_bad_file_exits_2_with_one_line(tmp_path, content, needle):
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    proc = _cli("--results", str(path), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


def test_cli_non_numeric_value_named(tmp_path):
    rows = json.loads(SMALL.drop(columns=["extra"]).to_json(orient="records"))
    rows[2]["MIA"] = "n/a"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(rows))
    proc = _cli("--results", str(path), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: results: column 'MIA' has a non-numeric value 'n/a' at row 2 (d/B/1)"


def test_cli_out_without_results_is_an_error(tmp_path):
    proc = _cli("--out", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.strip() == "error: --out needs --results"


def test_blip2_summary_taus_ties_and_contradiction():
    """Two methods, FA tied: FA pairs undefined (null), RA-AD becomes the primary pair; RA and AD
    both higher for finetune_retain -> oriented tau(RA, AD) = -1 -> the contradiction replicates."""
    from mmunlearn.export import blip2_summary

    names = ["FA", "RA", "MIA", "AD", "JS"]
    ref = np.eye(5)
    ref[0, 1] = ref[1, 0] = 0.8512
    ref[0, 3] = ref[3, 0] = -0.2593
    analysis = {"finding1_tau_matrix": {"metric_names": names, "tau_matrix": ref.tolist()}}
    rows = [{"model": "tiny-blip2", "dataset": "umu", "method": "ga", "seed": 0, "FA": 0.5, "RA": 0.6, "AD": 1.9},
            {"model": "tiny-blip2", "dataset": "umu", "method": "finetune_retain", "seed": 0, "FA": 0.5, "RA": 0.63,
             "AD": 44.8}]
    s = blip2_summary(analysis, rows)
    assert s["blip2_tau"] == {"FA_RA": None, "FA_AD": None, "RA_AD": -1.0, "primary_pair": "RA,AD (FA tied)",
                              "primary_tau": -1.0}
    assert s["fa_tied"] is True and s["contradiction_replicated"] is True
    assert s["llava_tau_reference"] == {"FA_RA": 0.85, "FA_AD": -0.26, "RA_AD": 0.0}
    # FA no longer tied: lower FA (better) for ga, lower AD (better) for ga -> tau(FA, AD) = +1: agreement
    rows[1]["FA"] = 0.7
    s = blip2_summary(analysis, rows)
    assert s["blip2_tau"]["FA_AD"] == 1.0 and s["blip2_tau"]["primary_pair"] == "FA,AD"
    assert s["contradiction_replicated"] is False and s["fa_tied"] is False
    assert blip2_summary(analysis, [])["contradiction_replicated"] is None
