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

from scipy.stats import norm

from mmunlearn.analysis import METRICS, analyze, kendall_taus, uqs_scores
from mmunlearn.analysis.agreement import group_taus, mean_pairwise_tau, metric_clusters, tau_matrix, tau_table
from mmunlearn.analysis.table import check_rows
from mmunlearn.analysis.uqs import (combine_within, ranking_table, reliability, reliability_within, uqs_weights,
                                    weight_stability)
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


@pytest.mark.parametrize("ties", ["tau_b", "ordinal"])
def test_tau_matrix_by_hand(ties):
    # no ties within any group: tau-b and the ordinal tie-break agree
    tau, p = tau_matrix(check_rows(grid()), ties)
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
    assert a["n_models"] == 12 and a["ties"] == "tau_b" and a["reliability"] == "within"
    assert a["finding1_tau_matrix"]["metric_names"] == list(METRICS)
    assert a["finding1_tau_matrix"]["tau_matrix"][0][3] == approx(-2 / 3)
    # no constant metric in any of the 4 groups: every pair counts all of them
    assert a["finding1_tau_matrix"]["n_groups"] == [[4] * 5] * 5
    assert a["finding1_tau_matrix"]["excluded_groups"] == {
        f"{x}|{y}": [] for i, x in enumerate(METRICS) for y in METRICS[i + 1:]}
    # constant retrained_distance: every rho is undefined -> null, weights all at the floor
    # 0.01 / 0.05 = 0.2
    assert all(v == {"spearman_r": None, "p_value": None} for v in a["finding3_reliability"].values())
    within = a["finding3_reliability_within"]
    assert all(v["spearman_r"] is None and v["p_value"] is None and v["datasets"] == [] for v in within.values())
    assert within["RA"]["per_dataset"] == {"d1": {"spearman_r": None, "p_value": None, "n": 6},
                                           "d2": {"spearman_r": None, "p_value": None, "n": 6}}
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
    # Three (dataset, seed) groups of methods A, B, C (oriented best-to-worst in brackets):
    #          FA (lower better)   RA (higher)      MIA   AD (lower)   JS (lower)
    #   d/1    .1 .1 .3 [AB tie, C]  .9 .8 .7 [ABC]  .5    1 2 3 [ABC]  .1 .2 .3 [ABC]
    #   d/2    .1 .1 .3 [AB tie, C]  .9 .7 .8 [ACB]  .5    1 2 3 [ABC]  .1 .2 .3 [ABC]
    #   e/1    .2 .2 .2 [constant]   .7 .9 .8 [BCA]  .5    3 2 1 [CBA]  .1 .2 .3 [ABC]
    # MIA is constant everywhere. Group d/2 lists its rows C, B, A: method order (first
    # appearance) is still A, B, C.
    groups = {("d", 1): [("A", .1, .9, 1.), ("B", .1, .8, 2.), ("C", .3, .7, 3.)],
              ("d", 2): [("C", .3, .8, 3.), ("B", .1, .7, 2.), ("A", .1, .9, 1.)],
              ("e", 1): [("A", .2, .7, 3.), ("B", .2, .9, 2.), ("C", .2, .8, 1.)]}
    js = {"A": .1, "B": .2, "C": .3}
    rows = [{"dataset": d, "method": m, "seed": s, "FA": fa, "RA": ra, "MIA": .5, "AD": ad, "JS": js[m],
             "retrained_distance": .1 * (i + 1)} for (d, s), g in groups.items() for i, (m, fa, ra, ad) in enumerate(g)]
    return check_rows(pd.DataFrame(rows))


def test_tau_b_with_ties_by_hand():
    rows = tie_table()
    # FA-RA, tau_b = (C - D) / sqrt((n0 - n1)(n0 - n2)), n0 = 3 pairs, n1 / n2 = pairs tied in FA / RA.
    #   d/1: AB tied in FA; AC, BC concordant -> (2 - 0) / sqrt(2 * 3) = 2 / sqrt 6
    #   d/2: AB tied; AC concordant (A better in both), BC discordant (FA B > C, RA C > B) -> 0
    #   e/1: FA constant: ranks nothing, left out
    fa_ra = group_taus(rows, "FA", "RA", "tau_b")
    assert fa_ra.taus == [approx(2 / math.sqrt(6)), approx(0.0)]
    assert fa_ra.groups == ["d/1", "d/2"] and fa_ra.excluded == ["e/1"]
    t = tau_table(rows, "tau_b")
    assert t.tau[0, 1] == approx(1 / math.sqrt(6))
    # t-test of (a, 0), a = 2 / sqrt 6: mean a / 2, s = a / sqrt 2, se = s / sqrt 2 = a / 2, t = 1,
    # df 1 (Cauchy: sf(1) = 1/4) -> p = 1/2
    assert t.p[0, 1] == approx(0.5)
    # AD-JS: d/1, d/2 both ABC -> 1, 1; e/1 CBA vs ABC -> -1; mean 1/3, deviations 2/3, 2/3, -4/3,
    # s^2 = (24/9) / 2 = 4/3, se = sqrt(4/3) / sqrt 3 = 2/3, t = 1/2, df 2: p = 1 - t / sqrt(t^2 + 2) = 2/3
    assert t.tau[3, 4] == approx(1 / 3) and t.p[3, 4] == approx(2 / 3)
    # MIA constant in every group: no informative group -> undefined, all groups excluded
    assert math.isnan(t.tau[0, 2]) and math.isnan(t.p[0, 2])
    assert t.excluded["FA|MIA"] == ["d/1", "d/2", "e/1"] and t.excluded["RA|MIA"] == ["d/1", "d/2", "e/1"]
    assert t.excluded["FA|RA"] == ["e/1"] and t.excluded["AD|JS"] == []
    # counts (diagonal: groups where the metric ranks at all)
    assert t.n_groups.tolist() == [[2, 2, 0, 2, 2],
                                   [2, 3, 0, 3, 3],
                                   [0, 0, 0, 0, 0],
                                   [2, 3, 0, 3, 3],
                                   [2, 3, 0, 3, 3]]
    doc = analyze(rows)["analysis_results"]["finding1_tau_matrix"]
    assert doc["tau_matrix"][0][2] is None and doc["p_matrix"][0][2] is None and doc["tau_matrix"][2][2] == 1.0
    assert doc["n_groups"][0][1] == 2 and doc["excluded_groups"]["FA|RA"] == ["e/1"] and doc["ties"] == "tau_b"
    json.dumps(doc, allow_nan=False)
    # one informative group only: a tau, but no t-test
    one = rows[rows["dataset"] == "d"].copy()
    one.loc[one["seed"] == 2, "RA"] = .5
    t1 = tau_table(one, "tau_b")
    assert t1.tau[0, 1] == approx(2 / math.sqrt(6)) and math.isnan(t1.p[0, 1]) and t1.n_groups[0, 1] == 1


def test_ordinal_manufactures_agreement_between_constant_metrics():
    """The paper's rule ranks ties by method order, so a constant metric still 'ranks' A, B, C:
    two constant metrics agree perfectly (tau 1) and a constant one correlates with any metric
    that happens to follow method order."""
    rows = tie_table()
    # e/1: FA and MIA both constant -> ordinal ranks 1, 2, 3 for both -> tau 1; in d/1, d/2 FA's
    # A-B tie is broken A first (also in d/2, whose rows are listed C, B, A) -> 1, 2, 3 again.
    fa_mia = group_taus(rows, "FA", "MIA", "ordinal")
    assert fa_mia.taus == [1.0, 1.0, 1.0] and fa_mia.excluded == []
    assert group_taus(rows, "FA", "MIA", "tau_b").taus == []
    # FA-RA ordinal: d/1 ABC vs ABC -> 1; d/2 ABC vs ACB -> 1/3; e/1 ABC (tie-break) vs BCA -> -1/3
    assert group_taus(rows, "FA", "RA", "ordinal").taus == [approx(1.0), approx(1 / 3), approx(-1 / 3)]
    o = analyze(rows, ties="ordinal")["analysis_results"]["finding1_tau_matrix"]
    assert o["tau_matrix"][0][2] == approx(1.0) and o["tau_matrix"][0][1] == approx(1 / 3)
    assert o["n_groups"][0][2] == 3 and o["excluded_groups"]["FA|MIA"] == [] and o["ties"] == "ordinal"


def test_clusters_treat_undefined_tau_as_no_agreement():
    # MIA undefined against everything (NaN): distance 1 to every metric, between the blocks'
    # inner distances (.1, .2) and the cross distance 1.5, so a 3-cluster cut isolates it.
    tau = np.eye(5)
    tau[0, 1] = tau[1, 0] = .9
    tau[3, 4] = tau[4, 3] = .8
    for i, j in ((0, 3), (0, 4), (1, 3), (1, 4)):
        tau[i, j] = tau[j, i] = -.5
    tau[2, [0, 1, 3, 4]] = tau[[0, 1, 3, 4], 2] = np.nan
    assert metric_clusters(tau, k=3) == [["FA", "RA"], ["MIA"], ["AD", "JS"]]


def test_kendall_taus_of_a_small_table():
    # two methods, one group: FA tied -> FA pairs undefined; RA .6 < .63 and AD 1.9 < 44.8 for
    # (ga, finetune_retain): oriented RA prefers finetune_retain, AD prefers ga -> tau -1
    rows = [{"dataset": "umu", "method": "ga", "seed": 0, "FA": .5, "RA": .6, "AD": 1.9},
            {"dataset": "umu", "method": "finetune_retain", "seed": 0, "FA": .5, "RA": .63, "AD": 44.8}]
    t = kendall_taus(rows, metrics=("FA", "RA", "AD"))
    assert list(t) == ["FA_RA", "FA_AD", "RA_AD"]
    assert t["FA_RA"] == {"tau": None, "p_value": None, "n_groups": 0, "excluded_groups": ["umu/0"]}
    assert t["RA_AD"] == {"tau": -1.0, "p_value": None, "n_groups": 1, "excluded_groups": []}
    with pytest.raises(UserError, match="missing column 'AD'"):
        kendall_taus([{k: v for k, v in r.items() if k != "AD"} for r in rows], metrics=("FA", "RA", "AD"))


# --- within-dataset reliability -------------------------------------------------------------
def sign_table() -> pd.DataFrame:
    """Two datasets, 4 models each (methods A, B x seeds 1, 2); only RA varies. Inside each dataset
    RA ranks the models like closeness with d = 0, -1, 1, 0 (rho = 1 - sum d^2 / 10 = .8, n = 4:
    p = 1 - |rho| = .2, as for SMALL); d2's models are farther from their oracle (1.1-1.4 vs
    .1-.4) yet have higher RA, so pooled over both the sign flips (hand computation below)."""
    rows = []
    for dataset, ra, dist in (("d1", (.5, .3, .4, .2), (.1, .2, .3, .4)),
                              ("d2", (.9, .7, .8, .6), (1.1, 1.2, 1.3, 1.4))):
        for (method, seed), r, d in zip((("A", 1), ("A", 2), ("B", 1), ("B", 2)), ra, dist):
            rows.append({"dataset": dataset, "method": method, "seed": seed, "FA": .5, "RA": r, "MIA": .5,
                         "AD": 1.0, "JS": .1, "retrained_distance": d})
    return check_rows(pd.DataFrame(rows))


def test_within_and_pooled_reliability_disagree_in_sign():
    rows = sign_table()
    # pooled over 8 models: closeness ranks d1 8 7 6 5, d2 4 3 2 1; RA ranks d1 4 2 3 1, d2 8 6 7 5
    # d = -4 -5 -3 -4 4 3 5 4, sum d^2 = 132, rho = 1 - 6 * 132 / (8 * 63) = -4/7
    pooled = reliability(rows)
    assert pooled["RA"]["spearman_r"] == approx(-4 / 7) and pooled["FA"]["spearman_r"] is None
    within = reliability_within(rows)
    ra = within["RA"]
    assert ra["per_dataset"] == {"d1": {"spearman_r": approx(.8), "p_value": approx(.2), "n": 4},
                                 "d2": {"spearman_r": approx(.8), "p_value": approx(.2), "n": 4}}
    # rho = (4 * .8 + 4 * .8) / 8 = .8; one-sided p .1 each, weights sqrt 4 = 2:
    # Z = (2 + 2) z_.9 / sqrt(4 + 4) = sqrt 2 * z_.9, p = 2 sf(Z)
    assert ra["spearman_r"] == approx(.8) and ra["datasets"] == ["d1", "d2"]
    assert ra["p_value"] == approx(2 * norm.sf(math.sqrt(2) * norm.isf(.1)))
    # constant metric: null in each dataset, left out, null combined
    assert within["FA"]["spearman_r"] is None and within["FA"]["datasets"] == []
    assert within["FA"]["per_dataset"]["d1"] == {"spearman_r": None, "p_value": None, "n": 4}


def test_combination_formula_by_hand():
    # d1: n 4, rho .8, p .2; d2: n 5, rho -.5 -> t = rho sqrt(3 / (1 - .25)) = -1, p = 2 sf_t(1, 3);
    # d3 undefined (constant metric), left out.
    p2 = 2 * student_t.sf(1.0, 3)
    per = {"d1": {"spearman_r": .8, "p_value": .2, "n": 4}, "d2": {"spearman_r": -.5, "p_value": p2, "n": 5},
           "d3": {"spearman_r": None, "p_value": None, "n": 6}}
    rho, p, used = combine_within(per)
    assert rho == approx((4 * .8 + 5 * -.5) / 9) and used == ["d1", "d2"]
    # one-sided p of rho > 0: d1 .2 / 2 = .1, d2 1 - p2 / 2; Stouffer with weights 2 and sqrt 5:
    # Z = (2 isf(.1) + sqrt 5 isf(1 - p2 / 2)) / sqrt(4 + 5); p = 2 min(sf Z, 1 - sf Z)
    z = (2 * norm.isf(.1) + math.sqrt(5) * norm.isf(1 - p2 / 2)) / 3
    assert p == approx(2 * min(norm.sf(z), norm.cdf(z)))
    # one dataset: its own figures back
    assert combine_within({"d1": per["d1"]})[:2] == (approx(.8), approx(.2))
    assert combine_within({"d3": per["d3"]}) == (None, None, [])
    # the same per-dataset figures from a table: d2's RA ranks 5 2 4 1 3 vs closeness 1..5
    # (distances .5 .. .1): sum d^2 = 16 + 0 + 1 + 9 + 4 = 30, rho = 1 - 30 / 20 = -.5
    d1 = sign_table()[lambda f: f["dataset"] == "d1"]
    d2 = pd.DataFrame({"dataset": "d2", "method": list("ABCDE"), "seed": 1, "FA": .5, "RA": [.5, .2, .4, .1, .3],
                       "MIA": .5, "AD": 1.0, "JS": .1, "retrained_distance": [.5, .4, .3, .2, .1]})
    ra = reliability_within(check_rows(pd.concat([d1, d2])))["RA"]
    assert ra["per_dataset"]["d2"] == {"spearman_r": approx(-.5), "p_value": approx(p2), "n": 5}
    assert (ra["spearman_r"], ra["p_value"]) == (approx(rho), approx(p))


def test_uqs_weights_within_vs_pooled():
    rows = sign_table()
    # within: RA .8, the other (constant) metrics null -> floor .01: w_RA = .8 / .84
    w = analyze(rows)["uqs_weights"]
    assert w == {"FA": approx(.01 / .84), "RA": approx(.8 / .84), "MIA": approx(.01 / .84),
                 "AD": approx(.01 / .84), "JS": approx(.01 / .84)}
    # pooled: RA -4/7 -> floor too: every weight .2
    res = analyze(rows, reliability="pooled")
    assert res["uqs_weights"] == {m: approx(.2) for m in METRICS}
    a = res["analysis_results"]
    assert a["reliability"] == "pooled"
    assert a["finding3_reliability"]["RA"]["spearman_r"] == approx(-4 / 7)
    assert a["finding3_reliability_within"]["RA"]["spearman_r"] == approx(.8)


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
    for ties in ("dense", "average"):
        with pytest.raises(UserError, match=f"ties: unknown tie rule '{ties}'"):
            analyze(SMALL, ties=ties)
    with pytest.raises(UserError, match="reliability: unknown choice 'both'"):
        analyze(SMALL, reliability="both")
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


def test_cli_rejects_former_tie_name(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(SMALL.drop(columns=["extra"]).to_json(orient="records"))
    proc = _cli("--results", str(path), "--out", str(tmp_path / "out"), "--ties", "average")
    assert proc.returncode == 2 and "invalid choice: 'average'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


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
