"""CIFAR-10 unimodal branch: the classification counterpart of the multimodal runs.

Per seed: a small CNN (plain torch) is trained on the (optionally subsampled) training set — the
ORIGINAL model; for each forget setting (`cifar10_class`: every training image of
`forget_class`; `cifar10_random`: a random `forget_ratio` share of the training images) the
ORACLE is retrained from the same initial weights on the retain set only, and every method of
`mmunlearn.unimodal.methods.CLASSIFIER_METHODS` unlearns a copy of the original model with
AdamW for `unlearn.steps` steps (the same forget / retain batches for every method). Each
unlearned model gives one row of the released results format (SPEC section 8):

- FA / RA: `metrics.accuracy` on the forget images / a fixed subsample (`eval_retain`) of the
  retain images;
- MIA: the member rate of the main evaluator's attack (`metrics.mia_attack`, class-balanced) on
  `metrics.rows.mia_features` (max p, -entropy, top1-top2 margin of the class distribution: a
  prediction is a one-token answer), every forget image = members, every test image (of the
  forgotten class in the class setting) = non-members;
- AD: `activation_distance` of the penultimate (first linear layer, post-ReLU) features vs the
  oracle on the forget images; JS: `js_divergence` of the class distributions vs the oracle on the
  forget images (one position per sample);
- retrained_distance: `oracle_distance` over every parameter tensor.

Data come from the standard `cifar-10-batches-py` pickles (`load_cifar10`; `write_cifar10` writes
the same format). Pickles can execute code when loaded: only point `cifar10_dir` at data you trust.
"""
from __future__ import annotations

import copy
import pickle
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from mmunlearn.errors import UserError
from mmunlearn.io import atomic_path
from mmunlearn.params import ParamError, integer, keys, nonnegative, positive, ratio
from mmunlearn.unimodal.methods import CLASSIFIER_METHODS, ClassifierContext

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
PIXELS = 32 * 32 * 3
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MEAN = (0.4914, 0.4822, 0.4465)   # CIFAR-10 per-channel statistics (fixed, not data-dependent)
STD = (0.2470, 0.2435, 0.2616)
SETTINGS = ("cifar10_class", "cifar10_random")
KEY = "unimodal.cifar"

DEFAULT_CFG: dict = {
    "max_train": 5000,        # training images used (seeded subsample); null = all
    "epochs": 8,
    "lr": 0.002,
    "batch_size": 64,
    "forget_class": 0,
    "forget_ratio": 0.1,
    "eval_retain": 1000,      # retain images scored for RA (fixed seeded subsample)
    "threads": 1,             # torch CPU threads while the branch runs (rows are bit-identical
                              # for a given count; a CNN this small gains little from more)
    "unlearn": {"lr": 0.0002, "steps": 25, "gamma": 1.0, "beta": 0.1, "alpha": 1.0, "weight": 1.0},
    "methods": list(CLASSIFIER_METHODS),
}
_UNLEARN_KEYS = ("lr", "steps", "gamma", "beta", "alpha", "weight")


# ---- data ----------------------------------------------------------------------------------

def _layout_hint() -> str:
    return f"expected the cifar-10-batches-py layout: {', '.join((*TRAIN_FILES, TEST_FILE, META_FILE))}"


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"cifar10: {path}: file not found ({_layout_hint()})")
    try:
        with open(path, "rb") as fh:
            obj = pickle.load(fh, encoding="bytes")
    except Exception as e:  # any unpickling failure is a bad file, reported on one line
        why = " ".join(str(e).split()) or type(e).__name__
        raise UserError(f"cifar10: {path}: not a CIFAR-10 pickle ({why})") from None
    if not isinstance(obj, dict):
        raise UserError(f"cifar10: {path}: not a CIFAR-10 pickle (a {type(obj).__name__}, not a dict)")
    return obj


def _read_batch(path: Path, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(path)
    if b"data" not in d or b"labels" not in d:
        raise UserError(f"cifar10: {path}: missing key b'data' or b'labels'")
    data = np.asarray(d[b"data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        raise UserError(f"cifar10: {path}: b'data' must be uint8 [N, {PIXELS}], got "
                        f"{data.dtype} {list(data.shape)}")
    try:
        labels = np.asarray(d[b"labels"], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise UserError(f"cifar10: {path}: b'labels' must be a list of integers") from None
    if len(labels) != len(data):
        raise UserError(f"cifar10: {path}: {len(data)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise UserError(f"cifar10: {path}: labels must be in [0, {n_classes}), got "
                        f"{int(labels.min())}..{int(labels.max())}")
    # row-major channel-first (1024 R, 1024 G, 1024 B) -> [N, 32, 32, 3]
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def load_cifar10(path: str | Path) -> dict:
    """Read a `cifar-10-batches-py` directory.

    Returns {"train_x": uint8 [N, 32, 32, 3], "train_y": int64 [N], "test_x", "test_y",
    "classes": list of class names}. A missing directory / file, an unreadable pickle or a bad
    shape raises UserError (one line naming the path)."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"cifar10: {path}: not a directory ({_layout_hint()})")
    meta = _unpickle(path / META_FILE)
    names = meta.get(b"label_names")
    if not isinstance(names, (list, tuple)) or len(names) < 2:
        raise UserError(f"cifar10: {path / META_FILE}: b'label_names' must list at least 2 class names")
    classes = [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names]
    parts = [_read_batch(path / name, len(classes)) for name in TRAIN_FILES]
    test_x, test_y = _read_batch(path / TEST_FILE, len(classes))
    return {
        "train_x": np.ascontiguousarray(np.concatenate([p[0] for p in parts])),
        "train_y": np.concatenate([p[1] for p in parts]),
        "test_x": np.ascontiguousarray(test_x),
        "test_y": test_y,
        "classes": classes,
    }


def _check_images(name: str, x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x)
    y = np.asarray(y)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3):
        raise ValueError(f"write_cifar10: {name}_x must be uint8 [N, 32, 32, 3], got {x.dtype} {list(x.shape)}")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"write_cifar10: {name}_y must be {len(x)} integer labels")
    return x, y


def _dump(path: Path, obj: dict) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def write_cifar10(path: str | Path, train_x, train_y, test_x, test_y,
                  classes: Sequence[str] = CLASSES) -> Path:
    """Write images in the exact `cifar-10-batches-py` format (5 training batches, test_batch,
    batches.meta; b"data" uint8 [N, 3072] channel-first row-major); returns the directory."""
    path = Path(path)
    train_x, train_y = _check_images("train", train_x, train_y)
    test_x, test_y = _check_images("test", test_x, test_y)
    for y in (train_y, test_y):
        if len(y) and (y.min() < 0 or y.max() >= len(classes)):
            raise ValueError(f"write_cifar10: labels must be in [0, {len(classes)})")
    path.mkdir(parents=True, exist_ok=True)

    def batch(x, y, label: str, offset: int) -> dict:
        return {
            b"batch_label": label.encode(),
            b"labels": [int(v) for v in y],
            b"data": np.ascontiguousarray(x.transpose(0, 3, 1, 2).reshape(len(x), PIXELS)),
            b"filenames": [f"image_{offset + i:06d}.png".encode() for i in range(len(x))],
        }

    chunks = np.array_split(np.arange(len(train_x)), len(TRAIN_FILES))
    for i, (name, idx) in enumerate(zip(TRAIN_FILES, chunks)):
        offset = int(idx[0]) if len(idx) else 0
        _dump(path / name, batch(train_x[idx], train_y[idx], f"training batch {i + 1} of 5", offset))
    _dump(path / TEST_FILE, batch(test_x, test_y, "testing batch 1 of 1", 0))
    _dump(path / META_FILE, {b"num_cases_per_batch": max(len(c) for c in chunks),
                             b"label_names": [c.encode() for c in classes], b"num_vis": PIXELS})
    return path


def to_tensor(x: np.ndarray) -> torch.Tensor:
    """uint8 [N, 32, 32, 3] -> normalised float32 [N, 3, 32, 32]."""
    t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float().div_(255.0)
    return (t - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


# ---- model -----------------------------------------------------------------------------------

class SmallCNN(nn.Module):
    """conv(3->16) -> pool -> conv(16->32) -> pool -> linear(2048->128) -> linear(128->C)."""

    def __init__(self, num_classes: int = 10, width: int = 16, hidden: int = 128):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc1 = nn.Linear(2 * width * 8 * 8, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (the classifier layer's input)."""
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return torch.relu(self.fc1(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.features(x))


def init_model(num_classes: int, seed: int) -> SmallCNN:
    """Seeded initial weights; the global torch RNG is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SmallCNN(num_classes)


def _rng(seed: int, *tags: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), *tags])


def train_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: dict,
                     rng: np.random.Generator) -> nn.Module:
    """`cfg.epochs` epochs of AdamW (lr `cfg.lr`) cross-entropy, shuffled minibatches, in place."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=float(cfg["lr"]))
    bs = int(cfg["batch_size"])
    for _ in range(int(cfg["epochs"])):
        order = torch.from_numpy(rng.permutation(len(x)))
        for start in range(0, len(x), bs):
            idx = order[start:start + bs]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    return model


def unlearn(original: nn.Module, method: str, forget: tuple, retain: tuple, cfg: dict,
            num_classes: int, rng: np.random.Generator) -> nn.Module:
    """A copy of `original` after `unlearn.steps` AdamW steps on `method`'s loss; forget / retain
    batches of `batch_size` drawn without replacement from `rng`."""
    ucfg = cfg["unlearn"]
    loss_fn = CLASSIFIER_METHODS[method]
    model = copy.deepcopy(original).requires_grad_(True).train()
    ref = original.eval()          # its forwards run under no_grad inside the losses
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    ctx = ClassifierContext(model=model, ref=ref, cfg=ucfg, num_classes=num_classes, generator=gen)
    opt = torch.optim.AdamW(model.parameters(), lr=float(ucfg["lr"]))
    bs = int(cfg["batch_size"])
    (xf, yf), (xr, yr) = forget, retain
    for _ in range(int(ucfg["steps"])):
        fi = torch.from_numpy(rng.choice(len(xf), min(bs, len(xf)), replace=False))
        ri = torch.from_numpy(rng.choice(len(xr), min(bs, len(xr)), replace=False))
        loss = loss_fn(ctx, xf[fi], yf[fi], xr[ri], yr[ri])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return model


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """(class probabilities float64 [N, C], penultimate features float64 [N, H])."""
    model.eval()
    probs, feats = [], []
    for start in range(0, len(x), batch):
        h = model.features(x[start:start + batch])
        probs.append(torch.softmax(model.fc2(h).double(), -1))
        feats.append(h.double())
    return torch.cat(probs).numpy(), torch.cat(feats).numpy()


# ---- splits and metrics ----------------------------------------------------------------------

def make_splits(train_y: np.ndarray, test_y: np.ndarray, setting: str, cfg: dict, seed: int) -> dict:
    """Index arrays: forget / retain (training set), retain_eval (RA subsample), and holdout (test
    images, of the forgotten class for the class setting): the MIA non-members, the forget images
    being the members (`mia_attack` balances the two classes itself)."""
    rng = _rng(seed, 2, SETTINGS.index(setting))
    n = len(train_y)
    if setting == "cifar10_class":
        c = int(cfg["forget_class"])
        forget = np.flatnonzero(train_y == c)
        pool = np.flatnonzero(test_y == c)
        what = f"class {c}"
    else:
        k = int(round(float(cfg["forget_ratio"]) * n))
        forget = np.sort(rng.choice(n, min(max(k, 2), n), replace=False))
        pool = np.arange(len(test_y))
        what = f"forget_ratio {cfg['forget_ratio']}"
    retain = np.setdiff1d(np.arange(n), forget)
    if len(forget) < 2 or len(retain) < 2:
        raise UserError(f"cifar10 {setting}: {what} gives {len(forget)} forget / {len(retain)} retain "
                        f"training images; need at least 2 of each")
    if len(pool) < 2:
        raise UserError(f"cifar10 {setting}: {what} has {len(pool)} test images; the MIA needs at least 2")
    retain_eval = np.sort(rng.choice(retain, min(int(cfg["eval_retain"]), len(retain)), replace=False))
    return {"forget": forget, "retain": retain, "retain_eval": retain_eval, "holdout": pool}


def attack_features(probs: np.ndarray) -> np.ndarray:
    """[N, 3] features of the paper's attack (`metrics.rows.mia_features`) from class
    probabilities [N, C]: max p, -entropy (sum p log p, 0 log 0 = 0), top1 - top2 margin."""
    from scipy.special import xlogy

    from mmunlearn.metrics import mia_features

    top = np.sort(probs, axis=1)
    return mia_features(top[:, -1], xlogy(probs, probs).sum(1), top[:, -1] - top[:, -2])


def _value(name: str, v: Any) -> float:
    if v is None or not np.isfinite(v):
        raise UserError(f"cifar10: metric {name} is undefined ({v!r}): too few samples or a diverged model")
    return float(v)


def evaluate(model: nn.Module, oracle_out: dict, oracle: nn.Module, sets: dict, seed: int) -> dict:
    """The row metrics of one model against its oracle (`oracle_out` = `model_outputs(oracle)`)."""
    from mmunlearn.metrics import (accuracy, activation_distance, js_divergence, mia_attack,
                                   oracle_distance)

    out = model_outputs(model, sets)
    mia = mia_attack(attack_features(out["forget_probs"]), attack_features(out["holdout_probs"]), seed=seed)
    weights = dict(model.named_parameters())
    return {
        "FA": _value("FA", accuracy(out["forget_probs"].argmax(1) == sets["y_forget"])),
        "RA": _value("RA", accuracy(out["retain_probs"].argmax(1) == sets["y_retain_eval"])),
        "MIA": _value("MIA", mia["member_rate"]),
        "AD": _value("AD", activation_distance(out["forget_feats"], oracle_out["forget_feats"])),
        "JS": _value("JS", js_divergence(out["forget_probs"][:, None, :], oracle_out["forget_probs"][:, None, :])),
        "retrained_distance": _value("retrained_distance",
                                     oracle_distance(weights, dict(oracle.named_parameters()))),
    }


def model_outputs(model: nn.Module, sets: dict) -> dict:
    fp, ff = predict(model, sets["x_forget"])
    rp, _ = predict(model, sets["x_retain_eval"])
    hp, _ = predict(model, sets["x_holdout"])
    return {"forget_probs": fp, "forget_feats": ff, "retain_probs": rp, "holdout_probs": hp}


# ---- the branch --------------------------------------------------------------------------------

def subsample(data: dict, cfg: dict, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The training images of this seed: all, or a seeded `max_train` subsample (sorted indices)."""
    n = len(data["train_y"])
    cap = cfg.get("max_train")
    if cap is None or cap >= n:
        return data["train_x"], data["train_y"]
    idx = np.sort(_rng(seed, 0).choice(n, int(cap), replace=False))
    return data["train_x"][idx], data["train_y"][idx]


@contextmanager
def torch_threads(n: int):
    """Run the block with `n` torch CPU threads, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_seed(data: dict, cfg: dict, seed: int, progress: Any = None) -> dict:
    """One seed of the branch: {"rows": one per setting x method, "baselines": the original model
    and the oracle of each setting, scored the same way (method "original" / "oracle")}.
    `progress` is an optional tqdm bar (advanced once per trained / unlearned model)."""
    with torch_threads(cfg["threads"]):
        return _run_seed(data, cfg, seed, progress)


def _run_seed(data: dict, cfg: dict, seed: int, progress: Any) -> dict:
    num_classes = len(data["classes"])
    if int(cfg["forget_class"]) >= num_classes:
        raise ParamError(f"{KEY}.forget_class", cfg["forget_class"],
                         f"the data have {num_classes} classes (0..{num_classes - 1})")
    train_x, train_y = subsample(data, cfg, seed)
    x_all, y_all = to_tensor(train_x), torch.from_numpy(train_y.astype(np.int64))

    def tick(what: str) -> None:
        if progress is not None:
            progress.set_postfix_str(f"seed {seed} {what}", refresh=False)
            progress.update(1)

    init = init_model(num_classes, seed)
    original = train_classifier(copy.deepcopy(init), x_all, y_all, cfg, _rng(seed, 1))
    tick("original")
    rows, baselines = [], []
    for s_i, setting in enumerate(SETTINGS):
        ix = make_splits(train_y, data["test_y"], setting, cfg, seed)
        f, r = torch.from_numpy(ix["forget"]), torch.from_numpy(ix["retain"])
        sets = {
            "x_forget": x_all[f], "y_forget": train_y[ix["forget"]],
            "x_retain_eval": x_all[torch.from_numpy(ix["retain_eval"])],
            "y_retain_eval": train_y[ix["retain_eval"]],
            "x_holdout": to_tensor(data["test_x"][ix["holdout"]]),
        }
        oracle = train_classifier(copy.deepcopy(init), x_all[r], y_all[r], cfg, _rng(seed, 3, s_i))
        tick(f"{setting} oracle")
        oracle_out = model_outputs(oracle, sets)
        key = {"dataset": setting, "seed": int(seed)}
        baselines.append({**key, "method": "original", **evaluate(original, oracle_out, oracle, sets, seed)})
        baselines.append({**key, "method": "oracle", **evaluate(oracle, oracle_out, oracle, sets, seed)})
        forget, retain = (x_all[f], y_all[f]), (x_all[r], y_all[r])
        for method in cfg["methods"]:
            model = unlearn(original, method, forget, retain, cfg, num_classes,
                            _rng(seed, 4, s_i))   # the same batches for every method
            rows.append({**key, "method": method, **evaluate(model, oracle_out, oracle, sets, seed)})
            tick(f"{setting} {method}")
    return {"rows": rows, "baselines": baselines}


def run_branch(cfg: dict, cifar_dir: str | Path | dict, seeds: Sequence[int],
               progress: bool = False) -> list[dict]:
    """Every method x seed x setting of the CIFAR-10 branch, as rows of the released results
    format: {"dataset": "cifar10_class" | "cifar10_random", "method", "seed", "FA", "RA", "MIA",
    "AD", "JS", "retrained_distance"} (plain floats). `cifar_dir` is a cifar-10-batches-py
    directory (or an already loaded `load_cifar10` dict). Same cfg + seeds -> identical rows."""
    validate_cfg(cfg)
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ParamError("seeds", seeds, "need at least one seed, each once")
    for s in seeds:
        integer("seeds", s, 0)
    data = cifar_dir if isinstance(cifar_dir, dict) else load_cifar10(cifar_dir)
    from tqdm.auto import tqdm

    total = len(seeds) * (1 + len(SETTINGS) * (1 + len(cfg["methods"])))
    rows: list[dict] = []
    with tqdm(total=total, desc="cifar10", disable=not progress) as bar:
        for seed in seeds:
            rows.extend(run_seed(data, cfg, int(seed), progress=bar)["rows"])
    return rows


# ---- params ----------------------------------------------------------------------------------

def validate_cfg(cfg: Any, key: str = KEY) -> None:
    """Raise ParamError(key, value, why) for any value the branch cannot run with."""
    keys(key, cfg, tuple(DEFAULT_CFG))
    if cfg["max_train"] is not None:
        integer(f"{key}.max_train", cfg["max_train"], 10)
    integer(f"{key}.epochs", cfg["epochs"], 1)
    positive(f"{key}.lr", cfg["lr"])
    integer(f"{key}.batch_size", cfg["batch_size"], 1)
    integer(f"{key}.forget_class", cfg["forget_class"], 0)
    ratio(f"{key}.forget_ratio", cfg["forget_ratio"])
    integer(f"{key}.eval_retain", cfg["eval_retain"], 1)
    integer(f"{key}.threads", cfg["threads"], 1)
    u = cfg["unlearn"]
    keys(f"{key}.unlearn", u, _UNLEARN_KEYS)
    positive(f"{key}.unlearn.lr", u["lr"])
    integer(f"{key}.unlearn.steps", u["steps"], 1)
    for k in ("gamma", "alpha", "weight"):
        nonnegative(f"{key}.unlearn.{k}", u[k])
    positive(f"{key}.unlearn.beta", u["beta"])
    methods = cfg["methods"]
    if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
        raise ParamError(f"{key}.methods", methods, "must be a list of method names")
    for m in methods:
        if m not in CLASSIFIER_METHODS:
            raise ParamError(f"{key}.methods", m, f"unknown method (known: {', '.join(CLASSIFIER_METHODS)})")
    if len(set(methods)) != len(methods):
        raise ParamError(f"{key}.methods", methods, "lists a method twice")
    if len(methods) < 2:
        raise ParamError(f"{key}.methods", methods, "need at least 2 methods to compare")
