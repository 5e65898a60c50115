"""Metric functions against hand-computed values (arithmetic in the comments); no model, except
one integration test of KR's relearning on the tiny VLM at the end."""
from __future__ import annotations

import json
import math
import zlib
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import mmunlearn.metrics as M
from mmunlearn.metrics import (METRICS, accuracy, activation_distance, continual_metrics,
                               forget_quality, js_divergence, kr_relearn, loss_score, metric,
                               mia_attack, mia_auc, min_k_pp_score, min_k_score,
                               modality_alignment, oracle_distance, rouge_l, truth_ratio,
                               upper_triangular, zlib_score)
from mmunlearn.metrics.mia import balanced_draws
from mmunlearn.metrics.recovery import kr_gap_reason, kr_summary, kr_vs_oracle, recovered
from mmunlearn.metrics.rows import (differs, normalize, prediction, row_correct, strict_match,
                                    text_match, wrong_values)

LN2 = math.log(2.0)


# ---- registry ---------------------------------------------------------------------------------

def test_registry_contains_every_name():
    names = {"accuracy", "loss_score", "zlib_score", "min_k_score", "min_k_pp_score", "mia_auc",
             "mia_attack", "activation_distance", "js_divergence", "oracle_distance",
             "kr_relearn", "rouge_l", "truth_ratio", "forget_quality", "modality_alignment",
             "continual_metrics", "upper_triangular", "kr_vs_oracle", "row_correct", "mia_features"}
    assert names <= set(METRICS)
    for name in names - {"kr_vs_oracle"}:
        assert METRICS[name] is getattr(M, name)
    assert METRICS["kr_vs_oracle"] is kr_vs_oracle


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
    # b"hello world" compresses to 19 bytes. Score = MEAN token log-prob / bytes:
    # -0.9 / 9 = -0.1;  -3.8 / 19 = -0.2
    assert [len(zlib.compress(t.encode())) for t in ("a", "hello world")] == [9, 19]
    np.testing.assert_allclose(zlib_score([-0.9, -3.8], ["a", "hello world"]), [-0.1, -0.2])
    with pytest.raises(ValueError):
        zlib_score([-1.0], ["a", "b"])


def _scores(lp_mean, n_tokens, seed):
    """A Scores-like object: what `evaluate.mia_metrics` reads from one engine pass."""
    rng = np.random.default_rng(seed)
    lp_mean, n_tokens = np.asarray(lp_mean, float), np.asarray(n_tokens)
    return SimpleNamespace(logprob_mean=lp_mean, logprob_sum=lp_mean * n_tokens,
                           token_logprobs=[np.full(int(t), m) for m, t in zip(lp_mean, n_tokens)],
                           token_zpp=[np.full(int(t), m) for m, t in zip(lp_mean, n_tokens)],
                           max_prob=rng.random(len(lp_mean)), neg_entropy=-rng.random(len(lp_mean)),
                           margin=rng.random(len(lp_mean)))


def test_mia_metrics_zlib_reads_the_mean_log_prob():
    from mmunlearn.metrics.evaluate import mia_metrics

    # members: "hello world" (19 zlib bytes), 10 tokens, mean log-prob -0.19 -> -0.19/19 = -0.01
    #   (the SUM, -1.9, would give -0.1);
    # non-members: "a" (9 bytes), 1 token, mean -0.45 -> -0.05 (sum identical: -0.05).
    # By the mean every member is above every non-member (AUC 1); by the sum every one below (AUC 0).
    member, nonmember = _scores([-0.19] * 3, [10] * 3, 0), _scores([-0.45] * 3, [1] * 3, 1)
    cfg = {"min_k": 0.2, "mia_folds": 2, "mia_draws": 2}
    out = mia_metrics(member, nonmember, ["hello world"] * 3, ["a"] * 3, cfg, seed=0)
    assert out["zlib_auc"] == 1.0
    assert mia_auc(zlib_score(member.logprob_sum, ["hello world"] * 3), zlib_score(nonmember.logprob_sum, ["a"] * 3)) == 0.0
    assert out["loss_auc"] == 1.0  # -0.19 > -0.45
    assert out["attack_draws"] == 2 and out["attack_class_size"] == 3
    json.dumps(out)


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


def _unbalanced_member_rate(members, nonmembers, seed=0):
    """The attack as it was: one logistic regression on all samples, whatever the class ratio."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.vstack([members, nonmembers])
    y = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    p = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression()), x, y,
                          cv=StratifiedKFold(5, shuffle=True, random_state=seed), method="predict_proba")[:, 1]
    return float((p[: len(members)] >= 0.5).mean())


def test_mia_attack_separable_features():
    rng = np.random.default_rng(0)
    members = rng.normal(2.0, 1.0, size=(60, 3))
    nonmembers = rng.normal(-2.0, 1.0, size=(60, 3))
    out = mia_attack(members, nonmembers, folds=5, seed=0)
    assert set(out) == {"auc", "member_rate", "nonmember_rate", "draws", "class_size"}
    assert out["auc"] > 0.9 and out["member_rate"] > 0.9 and out["nonmember_rate"] < 0.1
    assert out == mia_attack(members, nonmembers, folds=5, seed=0)  # seeded
    json.dumps(out)
    # memorised members stay detected at an unequal ratio (1:4)
    lopsided = mia_attack(members[:30], rng.normal(-2.0, 1.0, size=(120, 3)), folds=5, seed=0)
    assert lopsided["member_rate"] > 0.9 and lopsided["class_size"] == 30


@pytest.mark.parametrize("n_members,n_nonmembers", [(200, 800), (400, 400), (800, 200)])
def test_mia_attack_same_distribution_is_half_whatever_the_ratio(n_members, n_nonmembers):
    # members and non-members from ONE distribution (a model that never saw the forget set):
    # the balanced attack classes ~half of each side member, at 1:4, 1:1 and 4:1 alike
    rng = np.random.default_rng(n_members)
    x = rng.normal(size=(n_members + n_nonmembers, 3))
    out = mia_attack(x[:n_members], x[n_members:], folds=5, seed=0, draws=10)
    assert abs(out["member_rate"] - 0.5) <= 0.1, out
    assert abs(out["nonmember_rate"] - 0.5) <= 0.1, out
    assert abs(out["auc"] - 0.5) <= 0.1, out
    assert out["class_size"] == min(n_members, n_nonmembers) and out["draws"] == 10
    # contrast: fitted on the unbalanced data the same features give the class prior instead
    unbalanced = _unbalanced_member_rate(x[:n_members], x[n_members:])
    if n_members < n_nonmembers:
        assert unbalanced < 0.1
    elif n_members > n_nonmembers:
        assert unbalanced > 0.9


def test_balanced_draws_by_hand():
    # 2 members, 5 non-members, 3 draws: members whole each time; non-members in chunks of 2 of
    # one permutation (draws 1 and 2 disjoint), then a fresh permutation (2 + 2 + 2 > 5)
    draws = balanced_draws(2, 5, 3, seed=0)
    assert [list(m) for m, _ in draws] == [[0, 1]] * 3
    chunks = [set(n.tolist()) for _, n in draws]
    assert all(len(c) == 2 and c <= set(range(5)) for c in chunks)
    assert not chunks[0] & chunks[1]
    # the larger class may be the members: roles swap
    swapped = balanced_draws(5, 2, 3, seed=0)
    assert [list(n) for _, n in swapped] == [[0, 1]] * 3
    assert [set(m.tolist()) for m, _ in swapped] == chunks
    # equal classes: every draw is everything (the draws then differ by their folds)
    assert all(len(m) == len(n) == 4 for m, n in balanced_draws(4, 4, 2, seed=1))
    with pytest.raises(ValueError, match="draws"):
        balanced_draws(4, 4, 0, seed=0)


def test_mia_attack_small_classes():
    rng = np.random.default_rng(2)
    # 3 members: folds clamped 5 -> 3, still runs
    out = mia_attack(rng.normal(3, 1, (3, 3)), rng.normal(-3, 1, (10, 3)))
    assert out["auc"] is not None and 0.0 <= out["member_rate"] <= 1.0
    none = mia_attack(rng.normal(size=(1, 3)), rng.normal(size=(10, 3)))
    assert none["auc"] is None and none["member_rate"] is None
    assert mia_attack(np.empty((0, 3)), rng.normal(size=(10, 3)))["auc"] is None
    # 1-D = one feature per sample (here: perfectly separated)
    assert mia_attack(np.arange(10.0) + 100, np.arange(10.0))["auc"] == 1.0
    with pytest.raises(ValueError, match="features"):
        mia_attack(rng.normal(size=(4, 3)), rng.normal(size=(4, 2)))
    with pytest.raises(ValueError, match="NaN"):
        mia_attack(np.array([[np.nan]] * 4), rng.normal(size=(4, 1)))


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


def rows(*codes):
    """Per-row correctness (finetuned, unlearned, relearned) from 3-letter codes, 1 = correct:
    rows("110", "101") -> ft [1, 1], unlearned [1, 0], relearned [0, 1]."""
    return {k: np.array([c[i] == "1" for c in codes]) for i, k in enumerate(("finetuned", "unlearned", "relearned"))}


def test_kr_counts_the_forgotten_rows_that_come_back():
    # 10 rows; the fine-tuned model knows 8; the unlearned model forgot 4 of them (rows 0-3) and
    # knows 4 (rows 4-7); the relearning brings back rows 0 and 1 and erases rows 4, 5, 6:
    # KR = 2 / 4 = 0.5; relearn_loss = 3 / 4; FA: ft 0.8, un 0.4, re 0.2 + 0.1 = 0.3
    r = rows("101", "101", "100", "100", "110", "110", "110", "111", "000", "000")
    assert kr_relearn(**r, min_gap=0.2) == pytest.approx(0.5)
    out = kr_summary(**r, min_gap=0.2)
    assert out["relearn_loss"] == pytest.approx(0.75)
    # the aggregate ratio mixes recovery with damage: (0.3 - 0.4) / (0.8 - 0.4) = -0.25
    assert out["kr_net"] == pytest.approx(-0.25)
    # rows the fine-tuned model never knew do not count, whatever the relearning does to them
    r2 = rows("101", "101", "100", "100", "110", "110", "110", "111", "001", "001")
    assert kr_relearn(**r2, min_gap=0.2) == pytest.approx(0.5)
    # nothing came back / all came back
    assert kr_relearn(**rows("100", "100", "111"), min_gap=0.2) == 0.0
    assert kr_relearn(**rows("101", "101", "110"), min_gap=0.2) == 1.0
    with pytest.raises(ValueError, match="kr_min_gap"):
        kr_relearn(**r, min_gap=1.5)


def test_kr_is_bounded_on_every_outcome():
    # every assignment of 4 rows x (finetuned, unlearned, relearned) and every oracle recovery:
    # KR in [0, 1] and KR_vs_oracle in [-1, 1] whenever defined; null exactly when the gap is short
    import itertools
    codes = ["".join(c) for c in itertools.product("01", repeat=3)]
    for combo in itertools.product(codes, repeat=4):
        r = rows(*combo)
        k = kr_relearn(**r, min_gap=0.25)
        short = r["finetuned"].mean() - r["unlearned"].mean() < 0.25 - 1e-12
        assert (k is None) == short
        for o in (0.0, 0.5, 1.0):
            vs = kr_vs_oracle(oracle_recovery=o, **r, min_gap=0.25)
            assert (vs is None) == short
            if k is not None:
                assert 0.0 <= k <= 1.0 and -1.0 <= vs <= 1.0 and vs == pytest.approx(k - o)


def test_kr_gap_rule_and_reason():
    # the default run's KR = -7.0 came from a gap of 0.03; such a gap is now null, with why
    r = rows(*(["111"] * 70 + ["101"] * 3 + ["000"] * 27))
    out = kr_summary(**r, min_gap=0.1, oracle_recovery=0.2)
    assert out["kr"] is None and out["kr_vs_oracle"] is None and out["kr_net"] is None
    assert out["kr_reason"] == "FA_finetuned - FA_unlearned = 0.03 < metrics.kr_min_gap 0.1"
    assert out["kr_vs_oracle_reason"] == out["kr_reason"]
    # a gap equal to the threshold (0.3 - 0.2 = 0.09999999999999998 in floats) is defined
    assert kr_gap_reason(0.2, 0.3, 0.1) is None
    assert kr_gap_reason(None, 0.3, 0.1).startswith("FA_unlearned None")


def test_kr_vs_oracle_by_hand():
    # forgotten rows 0-3, two come back: KR 0.5; the oracle gets back 1 in 4 of the rows it
    # never knew: KR_vs_oracle = 0.5 - 0.25 = 0.25
    r = rows("101", "101", "100", "100", "111")
    ft, o, o_after = np.array([1, 1, 1, 1, 1, 0], bool), np.array([0, 0, 0, 0, 1, 0], bool), \
        np.array([1, 0, 0, 0, 1, 1], bool)
    assert recovered(ft, o, o_after) == pytest.approx(0.25)   # row 5: the fine-tuned model never knew it
    out = kr_summary(**r, min_gap=0.2, oracle_recovery=recovered(ft, o, o_after))
    assert out["kr"] == pytest.approx(0.5) and out["kr_vs_oracle"] == pytest.approx(0.25)
    assert out["kr_reason"] is None and out["kr_vs_oracle_reason"] is None
    # the same steps teach the oracle as much: no hidden knowledge
    assert kr_vs_oracle(oracle_recovery=0.5, **r, min_gap=0.2) == pytest.approx(0.0)
    # no oracle: KR stays, KR_vs_oracle is null with its own reason
    none = kr_summary(**r, min_gap=0.2)
    assert none["kr"] == pytest.approx(0.5) and none["kr_vs_oracle"] is None
    assert "oracle" in none["kr_vs_oracle_reason"] and none["kr_reason"] is None


def test_kr_min_gap_and_mia_draws_params_are_validated(base_params):
    import copy

    from mmunlearn.params import ParamError, validate

    assert base_params["metrics"]["kr_min_gap"] == 0.2 and base_params["metrics"]["mia_draws"] == 10
    for key, bad in (("kr_min_gap", 0.0), ("kr_min_gap", 1.0), ("kr_min_gap", "x"), ("mia_draws", 0)):
        p = copy.deepcopy(base_params)
        p["metrics"][key] = bad
        with pytest.raises(ParamError, match=f"metrics.{key}"):
            validate(p)


# ---- the one per-row correctness definition (metrics.rows) --------------------------------------

def test_normalize_keeps_signs():
    assert normalize("Smith, J.") == "smith j"             # punctuation -> space, collapsed
    assert normalize("  St. Mary   Hospital ") == "st mary hospital"
    assert normalize("A+") == "a+" and normalize("A-") == "a-" and normalize("AB+") == "ab+"
    assert normalize("A+") != normalize("A-")               # different blood types
    assert normalize("555-0100") == "555-0100" and normalize("2020-01-05") == "2020-01-05"
    assert normalize("$24,000") == "24 000"
    assert normalize("x - y") == "x y"                      # a free-standing dash is no sign
    assert normalize(42) == "42"


def test_text_match_whole_word_containment():
    assert text_match("smith j", "Smith, J.")               # normalized exact
    assert text_match("The blood type is A+.", "A+")        # gold contained, whole words
    assert not text_match("A+", "A-") and not text_match("A-", "A+")
    assert not text_match("AB+", "B+")                      # "b+" is not a word of "ab+"
    assert not text_match("Johnson", "John")                # nor "john" of "johnson"
    assert text_match("John Smith", "John")                 # containment credit...
    assert not text_match("John", "John Smith")             # ...only for the gold inside the prediction
    assert not text_match("", "x") and not text_match("anything", "") and not text_match("", "")


def test_strict_match_is_normalized_equality():
    assert strict_match("smith j", "Smith, J.")
    assert not strict_match("Dr. Smith", "Smith")           # containment gives no credit
    assert not strict_match("A+", "A-")
    assert not strict_match("", "")


def test_row_correct_for_each_form():
    cls = {"form": "classification", "options": ["A+", "A-", "B+", "O-"], "answer": "A-"}
    gen = {"form": "generation", "options": [], "answer": "A-"}
    cloze = {"form": "cloze", "options": [], "answer": "J. Smith"}
    rows = [cls, cls, cls, gen, gen, cloze, cloze]
    chosen = [1, 0, 0, -1, -1, -1, -1]
    texts = ["", "", "A-", "blood type a-", "A+", "Smith", "j smith"]
    # cls: option 1 = "A-" right; option 0 = "A+" wrong, and the greedy text does not count;
    # gen: "a-" contained; "a+" is not "a-"; cloze: "smith" lacks "j"; "j smith" equal
    np.testing.assert_array_equal(row_correct(rows, chosen, texts), [True, False, False, True, False, False, True])
    # a classification row without options is scored by its text
    bare = {"form": "classification", "options": [], "answer": "B+"}
    assert row_correct([bare], [-1], ["b+"]).tolist() == [True]
    assert prediction(cls, 1, "ignored") == "A-" and prediction(gen, -1, "A+") == "A+"
    with pytest.raises(ValueError, match="row_correct"):
        row_correct(rows, chosen[:-1], texts)


def test_wrong_values_excludes_what_the_scorer_would_accept():
    pool = ["A+", "a-", "A-", "A- negative", "B+", "-", "O-"]
    # "a-" / "A-" normalize to the truth; "A- negative" contains it; "-" normalizes to "" (no
    # value at all); "A+", "B+" and "O-" differ (order kept)
    assert wrong_values("A-", pool) == ["A+", "B+", "O-"]
    assert not differs("Smith", "John Smith")               # the truth contains the value
    assert differs("Jon Smith", "John Smith")
    with pytest.raises(ValueError, match="medical.blood_type.*'A-'"):
        wrong_values("A-", ["a-", " A- ", "(A-)", "--"], "medical.blood_type")


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


def test_continual_sample_is_fixed_by_its_key():
    """`evaluate.sample`: n of the rows in their order, drawn by the key alone (task i's sample is
    the same whatever the number of tasks); all rows when n is 0 or not below their count."""
    from mmunlearn.metrics.evaluate import sample

    rows = [{"qa_id": f"q{i}"} for i in range(10)]
    assert sample(rows, 0, [0, 1]) == rows and sample(rows, 10, [0, 1]) == rows
    a = sample(rows, 4, [0, 0xC1, 3])
    assert len(a) == 4 and a == sorted(a, key=lambda r: int(r["qa_id"][1:]))
    assert sample(rows, 4, [0, 0xC1, 3]) == a
    assert any(sample(rows, 4, [0, 0xC1, t]) != a for t in (4, 5, 6))   # another task, another draw


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


# ---- integration: KR (a) on the tiny VLM ------------------------------------------------------

def test_relearn_kr_on_a_tiny_model(smoke_dataset, tmp_path):
    import copy

    torch = pytest.importorskip("torch")
    from mmunlearn.metrics.evaluate import Evaluator, relearn_control, relearn_folds, relearn_kr
    from mmunlearn.models.base import chat_corpus
    from mmunlearn.models.tiny import build_tiny_llava

    root, params = smoke_dataset
    qa = pd.read_parquet(root / "data" / "qa.parquet")
    forget = qa[qa.split == "forget"]
    forget = forget[forget.pair_id.isin(sorted(set(forget.pair_id))[:4])].to_dict("records")
    torch.manual_seed(0)
    model, processor = build_tiny_llava(chat_corpus(forget), seed=0)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    p = copy.deepcopy(params)
    p["metrics"].update(relearn_steps=2, batch_size=16, relearn_fraction=0.5)
    p["finetune"]["batch_size"] = 4
    ev = Evaluator(p, base_dir=tmp_path, data_dir=root / "data")
    # cross-fitting: 2 folds; each pair relearned on in one fold and measured in the other
    folds = relearn_folds(forget, 0.5, 0)
    assert len(folds) == 2 and all(a and b for a, b in folds)
    assert sorted(r["qa_id"] for a, _ in folds for r in a) == sorted(r["qa_id"] for r in forget)
    assert folds[0][0] == folds[1][1] and folds[0][1] == folds[1][0]
    assert len(relearn_folds(forget, 0.25, 0)) == 4 and relearn_folds(forget[:2], 0.5, 0) == []
    unlearned = ev.run(model, forget)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # the oracle IS the unlearned model here: the same steps teach it exactly as much, so the
    # recovery beyond the oracle is 0; the fine-tuned model knew every test row (FA 1)
    ft = {r["qa_id"]: True for r in forget}
    o, o_after = relearn_control(ev, model, forget, 0)
    assert len(o) == len(o_after) == sum(len(b) for _, b in folds)
    control = {"fa_oracle": accuracy(o), "fa_oracle_relearned": accuracy(o_after),
               "oracle_recovery": recovered(np.ones_like(o), o, o_after)}
    out = relearn_kr(ev, model, unlearned, forget, ft, 0, control)
    assert [f["train_rows"] + f["test_rows"] for f in out["folds"]] == [len(forget)] * 2
    assert out["fa_finetuned"] == 1.0 and out["fa_oracle"] == pytest.approx(out["fa_unlearned"], abs=1e-6)
    assert out["fa_unlearned"] == pytest.approx(unlearned.frame.correct.mean(), abs=1e-6)  # every row measured once
    assert out["fa_oracle_relearned"] == pytest.approx(out["fa_relearned"], abs=1e-6)
    assert out["kr"] == pytest.approx(control["oracle_recovery"], abs=1e-6) and 0.0 <= out["kr"] <= 1.0
    assert out["kr_vs_oracle"] == 0.0 and out["kr_reason"] is None
    assert out["kr_net"] == pytest.approx((out["fa_relearned"] - out["fa_unlearned"]) / (1 - out["fa_unlearned"]),
                                          abs=1e-5)
    # relearning adapters are unloaded: the model is bit-identical and is a plain model again
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # fine-tuned correctness = the unlearned model's own: nothing was forgotten -> null, with why
    own = dict(zip(unlearned.frame.qa_id, unlearned.frame.correct))
    none = relearn_kr(ev, model, unlearned, forget, own, 0, None)
    assert none["kr"] is None and none["kr_vs_oracle"] is None
    assert none["kr_reason"] == "FA_finetuned - FA_unlearned = 0 < metrics.kr_min_gap 0.2"
    assert none["fa_unlearned"] == none["fa_finetuned"] and none["fa_relearned"] is None  # not relearned
    json.dumps(out)


# ---- row metrics: the registry's metadata drives the columns ---------------------------------------

def test_row_metrics_by_hand():
    from mmunlearn.metrics.columns import headline_metrics, lower_is_better, row_metrics, row_values

    assert headline_metrics() == ("FA", "RA", "MIA", "AD", "JS")
    assert [i.name for i in row_metrics()][-1] == "retrained_distance"
    assert lower_is_better() == {"FA", "MIA", "AD", "JS", "retrained_distance"}
    frame = lambda *c: pd.DataFrame({"correct": list(c)})  # noqa: E731
    hidden = np.array([[0.0, 0.0], [1.0, 1.0]])
    forget = SimpleNamespace(frame=frame(True, False, False, True),
                             scores=SimpleNamespace(hidden=hidden, dist=[np.array([[1.0, 0.0]])]))
    inputs = {"forget": forget, "retain": SimpleNamespace(frame=frame(True, True, True, False)),
              "mia": {"member_rate": 0.25}}
    # without an oracle: FA 2/4, RA 3/4, MIA as the attack said; AD, JS, distance undefined
    assert row_values(inputs) == {"FA": 0.5, "RA": 0.75, "MIA": 0.25, "AD": None, "JS": None,
                                  "retrained_distance": None}
    # an oracle 3 and 4 away: AD = mean L2 of (3, 4) and (1 - 4, 1 - 5) = (5 + 5) / 2; its answer
    # distribution puts all mass on the other token: JS = ln 2
    oracle = SimpleNamespace(hidden=np.array([[3.0, 4.0], [4.0, 5.0]]), dist=[np.array([[0.0, 1.0]])])
    weights = ({"w": np.array([0.0, 0.0])}, {"w": np.array([3.0, 4.0])})
    values = row_values({**inputs, "oracle": oracle, "weights": weights})
    assert values["AD"] == 5.0 and values["retrained_distance"] == 5.0
    assert values["JS"] == pytest.approx(LN2)


def test_uqs_orients_by_the_registry():
    from mmunlearn.analysis.uqs import uqs_scores
    from mmunlearn.metrics.registry import utility

    rows = pd.DataFrame({"FA": [0.2], "RA": [0.9], "MIA": [0.5], "AD": [3.0], "JS": [0.1]})
    w = {"FA": 0.1, "RA": 0.2, "MIA": 0.3, "AD": 0.2, "JS": 0.2}
    # 0.1 (1 - 0.2) + 0.2 0.9 + 0.3 (1 - 0.5) + 0.2 / (1 + 3) + 0.2 (1 - 0.1) = 0.08 + 0.18 + 0.15 + 0.05 + 0.18
    assert uqs_scores(rows, w).iloc[0] == pytest.approx(0.64)
    assert utility("AD", 1.0) == 0.5 and utility("RA", 0.3) == 0.3 and utility("FA", 0.3) == 0.7


def test_a_headline_metric_declares_what_it_reads_and_its_orientation():
    with pytest.raises(ValueError, match="needs `reads` and `higher_is_better`"):
        metric("toy_headline", headline=True, reads=("forget",))
    with pytest.raises(ValueError, match="needs `reads`"):
        metric("toy_headline", headline=True, higher_is_better=True)


def _stage_ev(n: int, every):
    """The parts of an Evaluator that the continual matrix reads: n tasks of two rows each
    (task i: rows f{i}a, f{i}b), two retain rows r1, r2."""
    from types import SimpleNamespace

    tasks = {i: [{"qa_id": f"f{i}a"}, {"qa_id": f"f{i}b"}] for i in range(1, n + 1)}
    return SimpleNamespace(n_tasks=n, cfg={"continual_every": every}, params={"scale": "small"},
                           task_sample=lambda: tasks, retain_subsample=lambda: [{"qa_id": "r1"}, {"qa_id": "r2"}])


def test_stage_tasks_ask_every_task_every_n_stages():
    from mmunlearn.metrics.evaluate import stage_tasks

    ev = _stage_ev(100, {"smoke": 1, "small": 10, "full": 10})
    assert stage_tasks(ev, 7) == [7]
    assert stage_tasks(ev, 10) == list(range(1, 11)) and stage_tasks(ev, 100) == list(range(1, 101))
    assert stage_tasks(_stage_ev(5, 1), 3) == [1, 2, 3]
    assert stage_tasks(_stage_ev(5, 4), 5) == [1, 2, 3, 4, 5]        # the last stage asks everything


def test_continual_matrix_with_stages_that_ask_their_own_task_only():
    """3 tasks, every task asked at stage 2 and the last: stage 1 holds A[1][1] only. By hand:
    A[0] = (1, 1, 1); A[1][1] = 0.5; A[2] = (1, 0); A[3] = (0.5, 0.5, 0); RA = 1, 1, 0.5, 0.5.
    Historical preservation over the asked pairs (2,1), (3,1), (3,2):
    1 - max(0, 1 - 0.5) = 0.5; 1 - max(0, 0.5 - 0.5) = 1; 1 - max(0, 0.5 - 0) = 0.5 -> 2/3."""
    from mmunlearn.metrics.evaluate import Pass, continual

    ev = _stage_ev(3, 2)
    s = lambda d: pd.Series(d, dtype=bool)  # noqa: E731
    ft = pd.DataFrame({"qa_id": [f"f{i}{x}" for i in (1, 2, 3) for x in "ab"] + ["r1", "r2"], "correct": True})
    stages = {1: (s({"f1a": True, "f1b": False}), s({"r1": True, "r2": True})),
              2: (s({"f1a": True, "f1b": True, "f2a": False, "f2b": False}), s({"r1": True, "r2": False}))}
    final_f = pd.DataFrame({"qa_id": ["f1a", "f1b", "f2a", "f2b", "f3a", "f3b"],
                            "correct": [True, False, False, True, False, False]})
    final_r = pd.DataFrame({"qa_id": ["r1", "r2"], "correct": [False, True]})
    out = continual(ev, stages, Pass(final_f, None), Pass(final_r, None), ft)
    assert out["A"][1] == [None, 0.5, None, None]
    assert out["A"][2] == [None, 1.0, 0.0, None] and out["A"][3] == [None, 0.5, 0.5, 0.0]
    assert out["retain_accuracy"] == [1.0, 1.0, 0.5, 0.5] and out["stages"] == [1, 2, 3]
    m = out["metrics"]
    assert m["effectiveness"] == pytest.approx(((1 - 0.5) + (1 - 0) + (1 - 0)) / 3)
    assert m["historical_preservation"] == pytest.approx(2 / 3)
    assert {"stage": 1, "task": 1, "accuracy": 0.5} in out["matrix"]
    assert not [c for c in out["matrix"] if c["stage"] == 1 and c["task"] > 1]
