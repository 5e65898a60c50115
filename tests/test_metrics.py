"""Metric functions against hand-computed values (arithmetic in the comments); no model."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

import mmunlearn.metrics as M
from mmunlearn.metrics import (METRICS, accuracy, activation_distance, continual_metrics,
                               forget_quality, js_divergence, kr_relearn, loss_score, metric,
                               mia_attack, mia_auc, min_k_pp_score, min_k_score,
                               modality_alignment, oracle_distance, rouge_l, truth_ratio,
                               upper_triangular, zlib_score)

LN2 = math.log(2.0)


# ---- registry ---------------------------------------------------------------------------------

def test_registry_contains_every_name():
    names = {"accuracy", "loss_score", "zlib_score", "min_k_score", "min_k_pp_score", "mia_auc",
             "mia_attack", "activation_distance", "js_divergence", "oracle_distance",
             "kr_relearn", "rouge_l", "truth_ratio", "forget_quality", "modality_alignment",
             "continual_metrics", "upper_triangular"}
    assert names <= set(METRICS)
    for name in names:
        assert METRICS[name] is getattr(M, name)


def test_registry_refuses_a_second_function_under_a_taken_name():
    with pytest.raises(ValueError, match="accuracy"):
        metric("accuracy")(lambda x: x)


# ---- accuracy and MIA scores ------------------------------------------------------------------

def test_accuracy():
    assert accuracy([True, False, True, True]) == 0.75  # 3 / 4
    assert accuracy(np.array([], dtype=bool)) is None
    assert isinstance(accuracy([1, 0]), float)


def test_loss_score_is_the_mean_log_likelihood():
    np.testing.assert_array_equal(loss_score([-0.5, -2.0]), [-0.5, -2.0])


def test_zlib_score_on_known_strings():
    # zlib.compress(b"a") = 2-byte header + 3-byte deflate block + 4-byte adler32 = 9 bytes;
    # b"hello world" compresses to 19 bytes.  -18 / 9 = -2;  -38 / 19 = -2.
    np.testing.assert_allclose(zlib_score([-18.0, -38.0], ["a", "hello world"]), [-2.0, -2.0])
    with pytest.raises(ValueError):
        zlib_score([-1.0], ["a", "b"])


def test_min_k_picks_the_lowest_tokens():
    lp = [np.array([-1.0, -5.0, -3.0, -2.0]), np.array([-0.5])]
    # k=0.5: floor(4*0.5)=2 lowest of sample 0 = {-5, -3} -> -4; sample 1: floor(0.5)=0 -> 1 token
    np.testing.assert_allclose(min_k_score(lp, 0.5), [-4.0, -0.5])
    # k=0.2: floor(0.8)=0 -> at least 1 token -> the minimum -5
    np.testing.assert_allclose(min_k_score(lp, 0.2), [-5.0, -0.5])
    # k=1: the plain mean (-11/4)
    np.testing.assert_allclose(min_k_score(lp, 1.0), [-2.75, -0.5])
    # Min-K%++ is the same selection on z-scores
    np.testing.assert_allclose(min_k_pp_score([np.array([0.3, -1.2, 2.0])], 0.34), [-1.2])
    with pytest.raises(ValueError):
        min_k_score(lp, 20)  # a percentage, not a fraction
    with pytest.raises(ValueError):
        min_k_score([np.array([])], 0.5)


def test_mia_auc_separated_inverted_tied():
    assert mia_auc([3, 4], [1, 2]) == 1.0   # every member above every non-member
    assert mia_auc([1, 2], [3, 4]) == 0.0   # inverted
    assert mia_auc([1, 1], [1, 1]) == 0.5   # all tied
    # members {1, 3} vs non-members {2, 0}: pairs won 1>0, 3>2, 3>0 -> 3/4
    assert mia_auc([1, 3], [2, 0]) == 0.75
    assert mia_auc([np.inf], [-np.inf, 0.0]) == 1.0  # infinite scores are ranked, not rejected
    assert mia_auc([], [1.0]) is None
    with pytest.raises(ValueError):
        mia_auc([np.nan], [1.0])


def test_mia_attack_separable_features():
    rng = np.random.default_rng(0)
    members = rng.normal(2.0, 1.0, size=(60, 3))
    nonmembers = rng.normal(-2.0, 1.0, size=(60, 3))
    out = mia_attack(members, nonmembers, folds=5, seed=0)
    assert set(out) == {"auc", "member_rate"}
    assert out["auc"] > 0.9
    assert out["member_rate"] > 0.9
    assert out == mia_attack(members, nonmembers, folds=5, seed=0)  # seeded
    json.dumps(out)


def test_mia_attack_identical_distributions_is_chance():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 3))
    out = mia_attack(x[:200], x[200:], folds=5, seed=0)
    assert abs(out["auc"] - 0.5) < 0.1


def test_mia_attack_small_classes():
    rng = np.random.default_rng(2)
    # 3 members: folds clamped 5 -> 3, still runs
    out = mia_attack(rng.normal(3, 1, (3, 3)), rng.normal(-3, 1, (10, 3)))
    assert out["auc"] is not None and 0.0 <= out["member_rate"] <= 1.0
    assert mia_attack(rng.normal(size=(1, 3)), rng.normal(size=(10, 3))) == \
        {"auc": None, "member_rate": None}
    assert mia_attack(np.empty((0, 3)), rng.normal(size=(10, 3)))["auc"] is None
    # 1-D = one feature per sample (here: perfectly separated)
    assert mia_attack(np.arange(10.0) + 100, np.arange(10.0))["auc"] == 1.0


# ---- distances to the oracle ------------------------------------------------------------------

def test_activation_distance_two_points():
    # sample 0: ||(0,0)-(3,4)|| = 5; sample 1: identical -> 0; mean = 2.5
    assert activation_distance([[0, 0], [1, 1]], [[3, 4], [1, 1]]) == 2.5
    with pytest.raises(ValueError):
        activation_distance([[0, 0]], [[0, 0, 0]])


def test_js_equal_and_disjoint():
    p = np.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]])
    assert js_divergence([p], [p.copy()]) == pytest.approx(0.0, abs=1e-12)
    # disjoint supports: M = (P+Q)/2 puts 1/2 on each -> KL(P||M) = KL(Q||M) = ln 2 -> JS = ln 2
    assert js_divergence([np.array([[1.0, 0.0]])], [np.array([[0.0, 1.0]])]) == pytest.approx(LN2)


def test_js_hand_value_and_mean_order():
    # P=(1,0), Q=(.5,.5), M=(.75,.25): KL(P||M)=ln(4/3)=0.287682,
    # KL(Q||M)=.5 ln(.5/.75)+.5 ln(.5/.25)=0.143841 -> JS=(0.287682+0.143841)/2=0.215762
    assert js_divergence([[[1.0, 0.0]]], [[[0.5, 0.5]]]) == pytest.approx(0.2157615543)
    # mean over positions THEN samples: sample 0 positions {ln2, 0} -> ln2/2; sample 1 {0} -> 0;
    # mean = ln2/4 (a flat mean over the 3 positions would give ln2/3)
    s0u, s0o = np.array([[1.0, 0.0], [0.5, 0.5]]), np.array([[0.0, 1.0], [0.5, 0.5]])
    s1 = np.array([[0.3, 0.7]])
    assert js_divergence([s0u, s1], [s0o, s1]) == pytest.approx(LN2 / 4)


def test_js_aligned_by_token_id_with_padding():
    # V=2 vs V'=3: the narrower one is zero-padded, so token id 2 has probability 0 in it
    assert js_divergence([[[0.5, 0.5]]], [[[0.5, 0.5, 0.0]]]) == pytest.approx(0.0, abs=1e-12)
    # all oracle mass on id 2, outside the unlearned model's vocabulary -> disjoint -> ln 2
    assert js_divergence([[[1.0, 0.0]]], [[[0.0, 0.0, 1.0]]]) == pytest.approx(LN2)
    # same numbers, different ids: NOT equal (ids matter, not sorted probabilities)
    assert js_divergence([[[0.9, 0.1, 0.0]]], [[[0.1, 0.9]]]) > 0.3
    # unnormalised rows are renormalised: (2,2) ~ (.5,.5)
    assert js_divergence([[[2.0, 2.0]]], [[[0.5, 0.5]]]) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        js_divergence([[[1.0, 0.0]]], [[[0.5, 0.5], [0.5, 0.5]]])  # position counts differ


def test_js_symmetric_and_bounded():
    rng = np.random.default_rng(3)
    p = [rng.dirichlet(np.ones(7), size=4), rng.dirichlet(np.ones(7), size=2)]
    q = [rng.dirichlet(np.ones(5), size=4), rng.dirichlet(np.ones(9), size=2)]
    a, b = js_divergence(p, q), js_divergence(q, p)
    assert a == pytest.approx(b)
    assert 0.0 < a < LN2
    assert js_divergence([], []) is None


def test_oracle_distance_small_tensors_and_shape_error():
    a = {"w": np.array([[1.0, 2.0], [3.0, 4.0]]), "b": np.zeros(2), "only_a": np.ones(3)}
    b = {"w": np.array([[1.0, 2.0], [3.0, 0.0]]), "b": np.array([3.0, 4.0]), "only_b": np.ones(1)}
    # ||w_a - w_b||_F = |4-0| = 4; ||b_a - b_b|| = ||(3,4)|| = 5; mean over common {w, b} = 4.5
    assert oracle_distance(a, b) == 4.5
    with pytest.raises(ValueError, match="'w'"):
        oracle_distance({"w": np.zeros((2, 2))}, {"w": np.zeros((2, 3))})
    with pytest.raises(ValueError):
        oracle_distance({"x": np.zeros(1)}, {"y": np.zeros(1)})


def test_oracle_distance_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    a = {"w": torch.tensor([[0.0, 0.0]], dtype=torch.bfloat16, requires_grad=True)}
    b = {"w": np.array([[3.0, 4.0]])}
    assert oracle_distance(a, b) == 5.0


def test_kr_relearn():
    # (0.5 - 0.2) / (0.8 - 0.2) = 0.3 / 0.6 = 0.5
    assert kr_relearn(0.5, 0.2, 0.8) == pytest.approx(0.5)
    assert kr_relearn(0.5, 0.2, 0.2) is None      # nothing was forgotten: 0 denominator
    assert kr_relearn(0.5, 0.3, 0.2) is None      # negative denominator
    assert kr_relearn(None, 0.2, 0.8) is None


# ---- text metrics -----------------------------------------------------------------------------

def test_rouge_l():
    out = rouge_l(["the cat sat on the mat", "red blue", "the cat sat on the mat"],
                  ["the cat sat on the mat", "green yellow", "the cat lay on a mat"])
    # identical -> 1; disjoint -> 0; LCS(the cat on mat)=4 of 6 and 6 tokens: P=R=F=2/3
    np.testing.assert_allclose(out, [1.0, 0.0, 2 / 3])
    with pytest.raises(ValueError):
        rouge_l(["a"], [])


def test_truth_ratio_known_arrays():
    lp_c = np.array([math.log(0.5), 0.0])
    lp_w = np.array([[math.log(0.25), math.log(0.5)], [-1.0, -2.0]])
    # sample 0: mean(0.25/0.5, 0.5/0.5) = mean(0.5, 1) = 0.75
    # sample 1: mean(e^-1, e^-2) / e^0 = (0.367879 + 0.135335) / 2 = 0.251607
    np.testing.assert_allclose(truth_ratio(lp_c, lp_w), [0.75, (math.exp(-1) + math.exp(-2)) / 2])
    # ragged wrong options (k = 1 and 2)
    np.testing.assert_allclose(truth_ratio([0.0, 0.0], [[0.0], [0.0, math.log(3.0)]]), [1.0, 2.0])


def test_forget_quality_ks():
    # fully separated samples of 3 vs 3: D = 1; exact two-sided p = 2 / C(6,3) = 2/20 = 0.1
    out = forget_quality([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert out["ks_stat"] == 1.0
    assert out["p_value"] == pytest.approx(0.1)
    same = forget_quality([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert same == {"ks_stat": 0.0, "p_value": 1.0}
    assert forget_quality([], [1.0]) == {"ks_stat": None, "p_value": None}


def test_modality_alignment_three_pairs():
    frame = pd.DataFrame([
        # pair 1 (forget): text right (R-L 1.0), masked wrong (R-L 0.5)
        dict(pair_id=1, view="text", split="forget", correct=True, rouge=1.0),
        dict(pair_id=1, view="vqa_masked", split="forget", correct=False, rouge=0.5),
        dict(pair_id=1, view="vqa_full", split="forget", correct=True, rouge=1.0),  # ignored view
        # pair 2 (forget): both right, R-L 0.6 and 0.2
        dict(pair_id=2, view="text", split="forget", correct=True, rouge=0.6),
        dict(pair_id=2, view="vqa_masked", split="forget", correct=True, rouge=0.2),
        # pair 3 (retain): both right, R-L 1.0 and 0.5
        dict(pair_id=3, view="text", split="retain", correct=True, rouge=1.0),
        dict(pair_id=3, view="vqa_masked", split="retain", correct=True, rouge=0.5),
        # unpaired (no masked view) and holdout rows: dropped
        dict(pair_id=4, view="text", split="forget", correct=True, rouge=1.0),
        dict(pair_id=5, view="text", split="holdout", correct=True, rouge=1.0),
        dict(pair_id=5, view="vqa_masked", split="holdout", correct=True, rouge=1.0),
    ])
    out = modality_alignment(frame)
    # AccF: pair 1 fails (masked wrong), pair 2 both right -> 1/2; AccR: 1/1
    # RLF: pair 1 (1 + .25)/1.5 = 0.833333, pair 2 (.36 + .04)/.8 = 0.5 -> mean 0.666667
    # RLR: 2 * 1.0 * 0.5 / 1.5 = 0.666667
    assert out["AccF"] == 0.5 and out["AccR"] == 1.0
    assert out["RLF"] == pytest.approx(2 / 3)
    assert out["RLR"] == pytest.approx(2 / 3)
    assert out["pairs_forget"] == 2 and out["pairs_retain"] == 1
    json.dumps(out)


def test_modality_alignment_zero_over_zero_and_empty_split():
    frame = pd.DataFrame([
        dict(pair_id=1, view="text", split="forget", correct=False, rouge=0.0),
        dict(pair_id=1, view="vqa_masked", split="forget", correct=False, rouge=0.0),
    ])
    out = modality_alignment(frame)
    assert out["RLF"] == 0.0 and out["AccF"] == 0.0  # 0/0 := 0
    assert out["AccR"] is None and out["RLR"] is None and out["pairs_retain"] == 0
    with pytest.raises(ValueError, match="duplicate"):
        modality_alignment(pd.concat([frame, frame]))


# ---- continual (ICU-Bench) --------------------------------------------------------------------

# stages 0..3 (0 = fine-tuned), tasks 1..3, column 0 unused; None = not defined (i > t)
A3 = [
    [None, 0.9, 0.8, 1.0],
    [None, 0.3, None, None],
    [None, 0.4, 0.2, None],
    [None, 0.3, 0.5, 0.1],
]
RA3 = [0.8, 0.8, 0.6, 0.7]


def test_continual_metrics_by_hand():
    out = continual_metrics(A3, RA3)
    # effectiveness: t=1 1-.3/.9=.666667; t=2 1-.2/.8=.75; t=3 1-.1/1=.9 -> 2.316667/3 = .772222
    assert out["effectiveness"] == pytest.approx((2 / 3 + 0.75 + 0.9) / 3)
    # historical: (t=2,i=1) 1-max(0,.4-.3)=.9; (3,1) 1-max(0,.3-.3)=1; (3,2) 1-(.5-.2)=.7 -> 2.6/3
    assert out["historical_preservation"] == pytest.approx(2.6 / 3)
    # retained utility RA_t / RA_0 = .8/.8, .8/.8, .6/.8, .7/.8 = 1, 1, .75, .875
    assert out["retained_utility"] == pytest.approx([1.0, 1.0, 0.75, 0.875])
    assert out["retained_utility_final"] == pytest.approx(0.875)
    # std (ddof=0): mean .90625; squared deviations .0087890625*2 + .0244140625 + .0009765625
    # = .04296875; / 4 = .0107421875; sqrt = .1036444
    assert out["stability"]["utility_std"] == pytest.approx(math.sqrt(0.0107421875))
    # drops: 1->1 0, 1->.75 .25, .75->.875 -.125 -> largest .25
    assert out["stability"]["largest_drop"] == pytest.approx(0.25)
    assert out["tasks"] == 3
    json.dumps(out)
    # a numpy matrix with NaN gives the same numbers
    arr = np.array([[np.nan if v is None else v for v in row] for row in A3])
    assert continual_metrics(arr, RA3) == out


def test_continual_metrics_edge_cases():
    one = continual_metrics([[None, 0.5], [None, 0.0]], [1.0, 1.0])
    assert one["historical_preservation"] is None        # N = 1 < 2
    assert one["effectiveness"] == 1.0                   # 1 - 0/0.5
    assert one["stability"] == {"utility_std": 0.0, "largest_drop": 0.0}
    # A[0][t] == 0 is skipped; relearned accuracy above A[i][i] is penalised only upwards
    out = continual_metrics([[None, 0.0, 0.5], [None, 0.0], [None, 0.0, 0.25]], [1.0, 1.0, 1.0])
    assert out["effectiveness"] == pytest.approx(0.5)    # only t=2: 1 - .25/.5
    assert out["historical_preservation"] == 1.0         # A[2][1]=0 <= A[1][1]=0
    with pytest.raises(ValueError):
        continual_metrics(A3, RA3[:-1])


def test_upper_triangular_long_format():
    rows = upper_triangular(A3)
    # i <= t, i >= 1: (1,1) (2,1) (2,2) (3,1) (3,2) (3,3)
    assert [(r["stage"], r["task"]) for r in rows] == [(1, 1), (2, 1), (2, 2), (3, 1), (3, 2), (3, 3)]
    assert rows[4]["accuracy"] == 0.5
    base = upper_triangular(A3, include_baseline=True)
    assert [(r["stage"], r["task"]) for r in base[:3]] == [(0, 1), (0, 2), (0, 3)]
    json.dumps(rows)
