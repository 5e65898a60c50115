"""CIFAR-10 unimodal branch: the pickle format, one-line errors, params, the classifier losses by
hand, and the whole branch on a tiny synthetic dataset written in the exact CIFAR-10 format."""
from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pandas as pd
import pytest
import torch

from mmunlearn.errors import UserError
from mmunlearn.params import ParamError
from mmunlearn.unimodal import (CLASSIFIER_METHODS, DEFAULT_CFG, SETTINGS, load_cifar10, run_branch,
                                run_seed, validate_cfg, write_cifar10)
from mmunlearn.unimodal.methods import ClassifierContext

KEYS = {"dataset", "method", "seed", "FA", "RA", "MIA", "AD", "JS", "retrained_distance"}
METHODS = ["ga", "npo_diff", "finetune_retain"]


def synthetic(n_per_class: int, seed: int, classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """One distinct 4x4 colour-block pattern per class (upsampled to 32x32) + per-image noise."""
    protos = np.random.default_rng(1234).integers(0, 256, size=(classes, 4, 4, 3))
    protos = protos.repeat(8, axis=1).repeat(8, axis=2)
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    x = protos[y] + rng.normal(0, 120, size=(len(y), 32, 32, 3))
    return np.clip(x, 0, 255).astype(np.uint8), y


def tiny_cfg() -> dict:
    cfg = copy.deepcopy(DEFAULT_CFG)
    cfg.update(max_train=None, epochs=3, batch_size=32, forget_class=3, forget_ratio=0.1,
               eval_retain=60, methods=list(METHODS))
    cfg["unlearn"].update(lr=0.001, steps=10)
    return cfg


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    train = synthetic(20, 1)
    test = synthetic(6, 2)
    path = write_cifar10(tmp_path_factory.mktemp("cifar") / "cifar-10-batches-py", *train, *test)
    return path, train, test


@pytest.fixture(scope="module")
def seed0(tiny):
    return run_seed(load_cifar10(tiny[0]), tiny_cfg(), 0)


# ---- the pickle format -----------------------------------------------------------------------

def test_round_trip(tiny):
    path, (tx, ty), (vx, vy) = tiny
    data = load_cifar10(path)
    assert data["train_x"].dtype == np.uint8 and data["train_x"].shape == (200, 32, 32, 3)
    assert data["train_y"].dtype == np.int64 and data["test_x"].shape == (60, 32, 32, 3)
    np.testing.assert_array_equal(data["train_x"], tx)
    np.testing.assert_array_equal(data["train_y"], ty)
    np.testing.assert_array_equal(data["test_x"], vx)
    np.testing.assert_array_equal(data["test_y"], vy)
    assert data["classes"][:2] == ["airplane", "automobile"] and len(data["classes"]) == 10


def test_files_are_the_standard_format(tiny):
    path, (tx, ty), _ = tiny
    assert sorted(p.name for p in path.iterdir()) == sorted(
        ["batches.meta", "test_batch", *(f"data_batch_{i}" for i in range(1, 6))])
    with open(path / "data_batch_1", "rb") as fh:
        batch = pickle.load(fh, encoding="bytes")
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (40, 3072)
    assert batch[b"labels"] == [int(v) for v in ty[:40]]
    # row-major, channel-first: the first 1024 bytes are the red plane, row by row
    np.testing.assert_array_equal(batch[b"data"][0, :1024], tx[0, :, :, 0].ravel())
    np.testing.assert_array_equal(batch[b"data"][0, 1024:2048], tx[0, :, :, 1].ravel())
    with open(path / "batches.meta", "rb") as fh:
        meta = pickle.load(fh, encoding="bytes")
    assert meta[b"label_names"][0] == b"airplane"


def _one_line(err: pytest.ExceptionInfo, *parts: str) -> None:
    msg = str(err.value)
    assert "\n" not in msg
    for part in parts:
        assert part in msg


def test_missing_dir_is_one_line(tmp_path):
    with pytest.raises(UserError) as err:
        load_cifar10(tmp_path / "nowhere")
    _one_line(err, str(tmp_path / "nowhere"), "data_batch_1")


def test_missing_or_bad_file_is_one_line(tmp_path):
    path = write_cifar10(tmp_path / "c", *synthetic(1, 0), *synthetic(1, 1))
    (path / "test_batch").unlink()
    with pytest.raises(UserError) as err:
        load_cifar10(path)
    _one_line(err, str(path / "test_batch"), "not found")

    (path / "test_batch").write_bytes(b"not a\npickle")
    with pytest.raises(UserError) as err:
        load_cifar10(path)
    _one_line(err, str(path / "test_batch"), "not a CIFAR-10 pickle")

    with open(path / "test_batch", "wb") as fh:
        pickle.dump({b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}, fh)
    with pytest.raises(UserError) as err:
        load_cifar10(path)
    _one_line(err, str(path / "test_batch"), "[3, 100]")

    with open(path / "test_batch", "wb") as fh:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 11]}, fh)
    with pytest.raises(UserError) as err:
        load_cifar10(path)
    _one_line(err, str(path / "test_batch"), "labels")


# ---- params ----------------------------------------------------------------------------------

def test_default_cfg_is_valid():
    validate_cfg(DEFAULT_CFG)
    validate_cfg(tiny_cfg())
    assert DEFAULT_CFG["methods"] == list(CLASSIFIER_METHODS)


@pytest.mark.parametrize("dotted, value, key", [
    ("epochs", 0, "unimodal.cifar.epochs"),
    ("lr", -1.0, "unimodal.cifar.lr"),
    ("forget_ratio", 1.0, "unimodal.cifar.forget_ratio"),
    ("forget_class", "cat", "unimodal.cifar.forget_class"),
    ("max_train", 5, "unimodal.cifar.max_train"),
    ("unlearn.beta", 0, "unimodal.cifar.unlearn.beta"),
    ("unlearn.steps", 2.5, "unimodal.cifar.unlearn.steps"),
    ("methods", ["ga", "salun"], "unimodal.cifar.methods"),
    ("methods", ["ga"], "unimodal.cifar.methods"),
    ("threads", 0, "unimodal.cifar.threads"),
    ("typo", 1, "unimodal.cifar.typo"),
])
def test_bad_cfg_names_the_key(dotted, value, key):
    cfg = copy.deepcopy(DEFAULT_CFG)
    node, *path = [cfg, *dotted.split(".")]
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(ParamError) as err:
        validate_cfg(cfg)
    assert err.value.key == key and "\n" not in str(err.value)


def test_missing_cfg_key():
    cfg = copy.deepcopy(DEFAULT_CFG)
    del cfg["unlearn"]["gamma"]
    with pytest.raises(ParamError) as err:
        validate_cfg(cfg)
    assert err.value.key == "unimodal.cifar.unlearn.gamma"


def test_bad_seeds(tiny):
    for seeds in ([], [0, 0], [1.5]):
        with pytest.raises(ParamError) as err:
            run_branch(tiny_cfg(), tiny[0], seeds)
        assert err.value.key == "seeds"


def test_forget_class_beyond_the_data(tiny):
    cfg = tiny_cfg()
    cfg["forget_class"] = 10
    with pytest.raises(ParamError) as err:
        run_branch(cfg, tiny[0], [0])
    assert err.value.key == "unimodal.cifar.forget_class"


# ---- the classifier losses by hand -----------------------------------------------------------

class Fixed(torch.nn.Module):
    """Logits = a parameter row per input index (x holds the indices)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.tensor(logits, dtype=torch.float64))

    def forward(self, x):
        return self.logits[x]


def _ctx(model, ref, **cfg):
    base = {"gamma": 2.0, "beta": 0.5, "alpha": 3.0, "weight": 4.0}
    return ClassifierContext(model=model, ref=ref, cfg={**base, **cfg}, num_classes=3,
                             generator=torch.Generator().manual_seed(0))


def test_classifier_losses_by_hand():
    logits = [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    model, ref = Fixed(logits), Fixed(logits)
    xf, yf = torch.tensor([0]), torch.tensor([0])
    xr, yr = torch.tensor([1]), torch.tensor([1])
    ce_f = -math.log(math.exp(2) / (math.exp(2) + 2))        # 0.2395
    ce_r = -math.log(math.e / (math.e + 2))                    # 0.5514
    ctx = _ctx(model, ref)
    L = {name: float(fn(ctx, xf, yf, xr, yr).detach()) for name, fn in CLASSIFIER_METHODS.items()
         if name != "random_labels"}
    assert L["ga"] == pytest.approx(-ce_f)
    assert L["ga_diff"] == pytest.approx(-ce_f + 2.0 * ce_r)
    assert L["kl"] == pytest.approx(-ce_f)                      # model == ref: KL = 0
    assert L["npo"] == pytest.approx(2 / 0.5 * math.log(2))     # -(2/b) log sigmoid(0)
    assert L["npo_diff"] == pytest.approx(2 / 0.5 * math.log(2) + 3.0 * ce_r)
    assert L["finetune_retain"] == pytest.approx(ce_r)

    # KL(p_ref || p_theta) on retain once the model moved: ref [0,1,0] vs theta [0,0,0] logits
    moved = Fixed([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    p = np.exp([0, 1, 0]) / np.exp([0, 1, 0]).sum()
    kl = float((p * np.log(p / (1 / 3))).sum())
    assert float(CLASSIFIER_METHODS["kl"](_ctx(moved, ref), xf, yf, xr, yr).detach()) == pytest.approx(-ce_f + 4.0 * kl)


def test_random_labels_are_wrong():
    """True label logit 5, next label 1, the other 0: every wrong label costs CE log(e^5+e+1) - 1
    or log(e^5+e+1); a true label would cost far less. The forget CE lies strictly between the
    two wrong costs iff only wrong labels are drawn, both kinds."""
    y = torch.arange(60) % 3
    logits = torch.zeros(60, 3, dtype=torch.float64)
    logits[torch.arange(60), y] = 5.0
    logits[torch.arange(60), (y + 1) % 3] = 1.0
    model = Fixed(logits.tolist())
    ce_retain = float(CLASSIFIER_METHODS["finetune_retain"](_ctx(model, model), None, None,
                                                            torch.arange(2), y[:2]).detach())
    ce_f = float(CLASSIFIER_METHODS["random_labels"](_ctx(model, model), torch.arange(60), y,
                                                     torch.arange(2), y[:2]).detach()) - ce_retain
    z = math.log(math.exp(5) + math.e + 1)
    assert z - 1 < ce_f < z


# ---- the shared metric functions -------------------------------------------------------------

def test_attack_features_by_hand():
    """The attack's features (`metrics.rows.mia_features`) of class distributions: max p,
    -entropy = sum p log p (0 log 0 = 0), top1 - top2 margin."""
    from mmunlearn.unimodal.cifar import attack_features

    f = attack_features(np.array([[0.1, 0.7, 0.2], [0.0, 1.0, 0.0]]))
    neg_entropy = 0.1 * math.log(0.1) + 0.7 * math.log(0.7) + 0.2 * math.log(0.2)
    np.testing.assert_allclose(f, [[0.7, neg_entropy, 0.5], [1.0, 0.0, 1.0]], atol=1e-12)


def test_mia_compares_every_forget_image_with_every_holdout_image(tiny):
    """No pre-balancing: all 20 training images of the forgotten class (members) against all 6 test
    images of the class; `mia_attack` balances the classes itself."""
    from mmunlearn.unimodal.cifar import make_splits

    data = load_cifar10(tiny[0])
    ix = make_splits(data["train_y"], data["test_y"], "cifar10_class", tiny_cfg(), 0)
    assert ix["forget"].tolist() == np.flatnonzero(data["train_y"] == 3).tolist()
    assert ix["holdout"].tolist() == np.flatnonzero(data["test_y"] == 3).tolist()
    ix = make_splits(data["train_y"], data["test_y"], "cifar10_random", tiny_cfg(), 0)
    assert len(ix["forget"]) == 20 and ix["holdout"].tolist() == list(range(len(data["test_y"])))


# ---- the branch ------------------------------------------------------------------------------

def test_rows(seed0):
    rows = seed0["rows"]
    assert len(rows) == len(SETTINGS) * len(METHODS)
    assert [(r["dataset"], r["method"]) for r in rows] == [(s, m) for s in SETTINGS for m in METHODS]
    for r in rows:
        assert set(r) == KEYS and r["seed"] == 0
        for k in KEYS - {"dataset", "method", "seed"}:
            assert type(r[k]) is float and math.isfinite(r[k]), (k, r)
        assert 0 <= r["FA"] <= 1 and 0 <= r["RA"] <= 1 and 0 <= r["MIA"] <= 1
        assert 0 <= r["JS"] <= math.log(2) and r["AD"] >= 0 and r["retrained_distance"] > 0


def test_unlearning_effects(seed0):
    base = {(b["dataset"], b["method"]): b for b in seed0["baselines"]}
    rows = {(r["dataset"], r["method"]): r for r in seed0["rows"]}
    for setting in SETTINGS:
        original, oracle = base[(setting, "original")], base[(setting, "oracle")]
        assert original["FA"] >= 0.9 and original["RA"] >= 0.9          # the CNN learned the patterns
        assert rows[(setting, "ga")]["FA"] < original["FA"]              # GA forgets
        assert oracle["AD"] == 0 and oracle["JS"] == 0 and oracle["retrained_distance"] == 0
        assert oracle["RA"] >= 0.9
    assert base[("cifar10_class", "oracle")]["FA"] <= 0.1               # never saw the class


def test_branch_is_deterministic(tiny, seed0):
    threads = torch.get_num_threads()
    rows = run_branch(tiny_cfg(), tiny[0], [0])
    assert rows == seed0["rows"]
    assert torch.get_num_threads() == threads          # the branch's thread count is restored


def test_rows_are_an_analysable_table(seed0):
    from mmunlearn.analysis.table import check_rows

    table = check_rows(pd.DataFrame(seed0["rows"]), "unimodal")
    assert sorted(table["dataset"].unique()) == sorted(SETTINGS)
