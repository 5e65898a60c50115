"""Batched evaluation engine: one teacher-forced pass per sample feeds every logit-based metric.

`score` returns, per sequence: the answer log-likelihood (sum, per token, mean), teacher-forced
exact match (argmax = gold at every answer token incl. EOS), per-token Min-K%++ z-scores, the
paper's MIA features (max p, -entropy, top1-top2 margin), the mean-pooled hidden state of one
layer and, on request, the next-token distributions over the answer positions. `choose_options`
scores classification options by answer likelihood; `generate` is batched greedy decoding with
left padding.

The fast path (on by default; each part is checked once per model against the plain forward pass
and dropped where the check fails, so any checkpoint loaded through the Auto* classes works):
batches of similar length split over two single-threaded streams on CPU; the vision tower runs
once per distinct image (`mm_encoder_outputs`); the last decoder layer's position-wise blocks run
on the answer positions only; vision layers after `vision_feature_layer` are skipped; the options
of a classification row are packed after one copy of its prompt. BLIP-2 takes every part but the
vision-layer skip (its Q-Former reads the vision tower's last layer): the features reused per image
are its Q-Former queries after the language projection, and the last decoder layer is its language
model's; a batch without images gets the features of zero images (`arch.no_image_inputs`).
"""
from __future__ import annotations

import inspect
import threading
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from mmunlearn.models import onednn
from mmunlearn.models.arch import generate as arch_generate
from mmunlearn.models.arch import language_hidden_states, model_parts, needs_image_features
from mmunlearn.models.encode import IGNORE, Encoded, collate, encode, repeat
from mmunlearn.models.scoring import forward_answers, model_inputs


@dataclass
class Scores:
    logprob_sum: np.ndarray
    n_tokens: np.ndarray
    exact: np.ndarray
    max_prob: np.ndarray
    neg_entropy: np.ndarray
    margin: np.ndarray
    hidden: np.ndarray
    token_logprobs: list[np.ndarray] = field(default_factory=list)
    token_zpp: list[np.ndarray] = field(default_factory=list)
    token_ids: list[np.ndarray] = field(default_factory=list)
    dist: list[np.ndarray] | None = None

    @property
    def logprob_mean(self) -> np.ndarray:
        return self.logprob_sum / np.maximum(self.n_tokens, 1)


def _order(enc: Encoded) -> list[int]:
    """Indices sorted by length (less padding); results are scattered back to input order."""
    return sorted(range(len(enc)), key=lambda i: (len(enc.input_ids[i]), i))


def _unwrap(model):
    """The transformers model under a peft wrapper (which forwards keyword arguments to it)."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


# --- fast path of `score`: each part is exact in what `Scores` keeps, and checked once per model
# against the plain forward pass (`_fast_ok`); a model that fails the check gets the plain pass.

def _supports_feature_reuse(model) -> bool:
    """Whether the model takes precomputed image features (`mm_encoder_outputs`, transformers 5
    VLMs: LLaVA, Qwen2-VL, ...) and computes them with `get_image_features`."""
    inner = _unwrap(model)
    try:
        params = inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):
        return False
    return "mm_encoder_outputs" in params and callable(getattr(inner, "get_image_features", None))


class ImageFeatures:
    """Vision tower + projector once per distinct image of an `Encoded`, reused by every row that
    shows the image (each image is asked about in several rows). Features live from the first
    batch that needs them to the last (uses are counted ahead over the planned batches), within
    `budget_bytes`; beyond it they are recomputed. `inputs(batch, idx)` returns the model inputs of
    a collated batch with the pixels replaced by the features (the plain inputs where the model
    does not return one feature tensor per image), passed back as the model returned them: its
    output type (BLIP-2's carries Q-Former fields) and a list (LLaVA) or one stacked tensor (BLIP-2)."""

    def __init__(self, model, enc: Encoded, batches: Sequence[Sequence[int]], budget_bytes: int = 256 << 20):
        self.model, self.enc, self.budget = _unwrap(model), enc, budget_bytes
        self.uses: dict[str, int] = {}
        for idx in batches:
            for name in {enc.image[i] for i in idx} - {None}:
                self.uses[name] = self.uses.get(name, 0) + 1
        self.cache: dict[str, torch.Tensor] = {}
        self.size = 0
        self.enabled = True
        self.output_type, self.stacked = None, False

    def _features(self, names: Sequence[str]) -> list[torch.Tensor] | None:
        pix = {k: torch.cat([self.enc.pixels[n][k] for n in names], dim=0) for k in self.enc.pixels[names[0]]}
        out = self.model.get_image_features(**pix, return_dict=True)
        feats = getattr(out, "pooler_output", None)
        self.output_type, self.stacked = type(out), isinstance(feats, torch.Tensor)
        if isinstance(feats, torch.Tensor):
            feats = list(feats)
        if not isinstance(feats, (list, tuple)) or len(feats) != len(names):
            return None
        return list(feats)

    def inputs(self, batch: dict, idx: Sequence[int]) -> dict:
        names = [self.enc.image[i] for i in idx if self.enc.image[i] is not None]
        if not names or not self.enabled:
            return model_inputs(batch, self.model)
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        distinct = list(dict.fromkeys(names))
        need = [n for n in distinct if n not in self.cache]
        feats = {n: self.cache[n] for n in distinct if n in self.cache}
        if need:
            new = self._features(need)
            if new is None:
                self.enabled = False
                return model_inputs(batch, self.model)
            feats.update(zip(need, new))
        for n in distinct:  # keep what later batches need, drop what they do not
            self.uses[n] = self.uses.get(n, 1) - 1
            if self.uses[n] <= 0:
                if n in self.cache:
                    self.size -= self.cache.pop(n).nbytes
            elif n not in self.cache and self.size + feats[n].nbytes <= self.budget:
                self.cache[n] = feats[n]
                self.size += feats[n].nbytes
        inputs = {k: v for k, v in model_inputs(batch).items() if k != "pixel_values"}
        if needs_image_features(self.model):
            inputs["pixel_values"] = None  # a required argument of BLIP-2's forward
        pooled = [feats[n] for n in names]
        wrap = self.output_type or BaseModelOutputWithPooling
        inputs["mm_encoder_outputs"] = {"image": wrap(pooler_output=torch.stack(pooled) if self.stacked else pooled)}
        return inputs


_FAST = threading.local()  # per thread: the active hooks, k = trailing positions the last layer must produce
_HOOK_LOCK = threading.Lock()
_HOOKS: dict[tuple[int, str], list] = {}


def _tail_modules(model, hidden_layer: int | None) -> list[torch.nn.Module]:
    """Position-wise blocks of the last decoder layer (query / output projections, MLP), when
    nothing `score` keeps needs that layer's output outside the answer positions: logits are taken
    at the last K positions only, and the pooled hidden state (`hidden_layer`) comes from an
    earlier layer. The layer's keys and values still cover every position. The decoder is looked
    up one level further where the first one is a causal LM (BLIP-2's `language_model`)."""
    get = getattr(_unwrap(model), "get_decoder", None)
    decoder = get() if callable(get) else None
    layers = getattr(decoder, "layers", None)
    inner_get = getattr(decoder, "get_decoder", None)
    if layers is None and callable(inner_get):
        layers = getattr(inner_get(), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or not len(layers):
        return []
    if hidden_layer is not None:
        n = len(layers) + 1  # embeddings + one state per layer
        if not -n <= hidden_layer < n or hidden_layer % n >= len(layers):
            return []
    last = layers[-1]
    attn = getattr(last, "self_attn", None)
    mods = [getattr(attn, "q_proj", None), getattr(attn, "o_proj", None), getattr(last, "mlp", None)]
    return [m for m in mods if isinstance(m, torch.nn.Module)]


def _unused_vision_layers(model) -> list[torch.nn.Module]:
    """Vision encoder layers after the one whose hidden states the projector reads
    (`vision_feature_layer`, LLaVA-style: e.g. -2 leaves the last layer unused; BLIP-2 has none)."""
    inner = _unwrap(model)
    config = getattr(inner, "config", None)
    feature = getattr(config, "vision_feature_layer", None)
    depth = getattr(getattr(config, "vision_config", None), "num_hidden_layers", None)
    vision = model_parts(inner)["vision"]
    tower = inner.get_submodule(vision[0]) if len(vision) == 1 else None
    if tower is None or not isinstance(depth, int) or depth < 1:
        return []
    feature = [feature] if isinstance(feature, int) else list(feature) if isinstance(feature, (list, tuple)) else []
    if not feature or not all(isinstance(f, int) and -depth - 1 <= f <= depth for f in feature):
        return []
    keep = max(f % (depth + 1) for f in feature)  # hidden state i is the output of layer i (0: embeddings)
    layers = [m for m in tower.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == depth]
    return list(layers[0][keep:]) if len(layers) == 1 else []


def _active(module, kind: str) -> bool:
    return (id(module), kind) in getattr(_FAST, "active", ())


def _tail_pre(module, args, kwargs):
    k, sel = getattr(_FAST, "k", None), getattr(_FAST, "sel", None)
    x = args[0] if args else None
    if not _active(module, "tail") or k is None or not isinstance(x, torch.Tensor) or x.dim() != 3 or k > x.shape[1]:
        return None
    _FAST.shapes[id(module)] = x.shape
    x = x[:, -k:]
    x = x[sel] if sel is not None and sel.shape == x.shape[:2] else x.contiguous()
    return (x,) + tuple(args[1:]), kwargs


def _scatter_back(output: torch.Tensor, shape: torch.Size, k: int) -> torch.Tensor:
    """`output` of the kept positions (the last `k`, or those of `_FAST.sel` when gathered) in
    a zero tensor of `shape` (positions) x output features."""
    if not isinstance(output, torch.Tensor) or output.dim() not in (2, 3):
        raise TypeError("a hooked block did not return a [batch, positions, features] tensor")
    out = output.new_zeros(shape[:-1] + output.shape[-1:])
    if output.dim() == 2:
        out[:, -k:][_FAST.sel] = output
    else:
        out[:, -output.shape[1]:] = output
    return out


def _tail_post(module, args, output):
    shape = _FAST.shapes.pop(id(module), None) if _active(module, "tail") else None
    return None if shape is None else _scatter_back(output, shape, _FAST.k)


def _head_pre(module, args, kwargs):
    """The output head on the kept positions only (its input: the last `k` positions, strided)."""
    x, sel = (args[0] if args else None), getattr(_FAST, "sel", None)
    if not _active(module, "head") or not isinstance(x, torch.Tensor) or x.dim() != 3:
        return None
    if sel is not None and sel.shape == x.shape[:2]:
        _FAST.shapes[id(module)] = x.shape
        return (x[sel],) + tuple(args[1:]), kwargs
    return None if x.is_contiguous() else ((x.contiguous(),) + tuple(args[1:]), kwargs)


def _head_post(module, args, output):
    shape = _FAST.shapes.pop(id(module), None) if _active(module, "head") else None
    return None if shape is None else _scatter_back(output, shape, shape[1])


def _skip_pre(module, args, kwargs):
    x = args[0] if args else None
    if not _active(module, "skip") or not isinstance(x, torch.Tensor) or x.dim() != 3:
        return None
    _FAST.skipped[id(module)] = x
    return (x[:, :1],) + tuple(args[1:]), kwargs


def _skip_post(module, args, output):
    x = _FAST.skipped.pop(id(module), None) if _active(module, "skip") else None
    if x is None:
        return None
    return (x, *output[1:]) if isinstance(output, tuple) else x


_HOOK_FNS = {"tail": (_tail_pre, _tail_post), "head": (_head_pre, _head_post), "skip": (_skip_pre, _skip_post)}


@contextmanager
def _fast_hooks(plan: Sequence[tuple[torch.nn.Module, str]]):
    """Installs the hooks of `plan` (module, kind) for the duration. They act only in threads
    inside `_fast_batch(plan, k, sel)` (other threads see the plain modules): "tail" runs the
    module on the last `k` positions, or on those of them selected by `sel` [batch, k] (zeros
    elsewhere: nothing kept depends on them), "head" runs the output head on the `sel` positions
    of its input (the last `k`; else on a contiguous copy of it), "skip" makes the module an
    identity (an unused layer; it runs on one position), "packed" computes an nn.Linear through
    oneDNN (`onednn`)."""
    entries = []
    with _HOOK_LOCK:
        for m, kind in plan:
            if kind == "packed":
                continue
            entry = _HOOKS.get((id(m), kind))
            if entry is None:
                pre, post = _HOOK_FNS[kind]
                handles = [m.register_forward_pre_hook(pre, with_kwargs=True)]
                if post is not None:
                    handles.append(m.register_forward_hook(post))
                entry = _HOOKS[(id(m), kind)] = [0, handles]
            entry[0] += 1
            entries.append(((id(m), kind), entry))
    try:
        with onednn.installed([m for m, kind in plan if kind == "packed"], static=True):
            yield
    finally:
        with _HOOK_LOCK:
            for key, entry in entries:
                entry[0] -= 1
                if entry[0] == 0:
                    for h in entry[1]:
                        h.remove()
                    del _HOOKS[key]


@contextmanager
def _fast_batch(plan: Sequence[tuple[torch.nn.Module, str]], k: int | None, sel: torch.Tensor | None = None):
    """Turns the hooks of `plan` on for this thread's forward passes (`k`: trailing positions
    whose last-layer output is kept; `sel` [batch, k]: those of them whose logits are read)."""
    _FAST.active, _FAST.k, _FAST.sel = {(id(m), kind) for m, kind in plan}, k, sel
    _FAST.shapes, _FAST.skipped = {}, {}
    try:
        with onednn.active([m for m, kind in plan if kind == "packed"]):
            yield
    finally:
        _FAST.active, _FAST.k, _FAST.sel, _FAST.shapes, _FAST.skipped = set(), None, None, {}, {}


def _hook_plan(model, hidden_layer: int | None, answer_tail: bool, reuse: bool,
               packed: bool = True) -> list[tuple[torch.nn.Module, str]]:
    lins = onednn.linears(model) if packed else []
    plan: list[tuple[torch.nn.Module, str]] = [(m, "packed") for m in lins + (onednn.gated_mlps(model) if lins else [])]
    tail = _tail_modules(model, hidden_layer) if answer_tail else []
    if tail:
        plan += [(m, "tail") for m in tail]
        head = _unwrap(model).get_output_embeddings() if hasattr(_unwrap(model), "get_output_embeddings") else None
        if isinstance(head, torch.nn.Module):
            plan.append((head, "head"))
    if reuse:
        plan += [(m, "skip") for m in _unused_vision_layers(model)]
    return plan


def _answer_k(batch: dict) -> tuple[int, torch.Tensor]:
    """(k, sel): the trailing positions whose logits `forward_answers` keeps (logits_to_keep) and,
    among them [batch, k], those predicting an answer token (the only logits scoring reads)."""
    labels = batch["labels"]
    k = int((labels != IGNORE).sum(1).max()) + 1
    sel = torch.zeros((labels.shape[0], k), dtype=torch.bool)
    if k > 1:
        sel[:, :-1] = labels[:, -(k - 1):] != IGNORE
    return k, sel


_FAST_OK: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def _fast_ok(model, enc: Encoded, order: Sequence[int], pad_id: int, hidden_layer: int | None,
             reuse: bool, plan: Sequence[tuple[torch.nn.Module, str]]) -> bool:
    """Once per model and configuration: the fast path reproduces the plain forward pass (logits
    and the kept hidden state, to 1e-5) on one row (with an image when there is one)."""
    key = (reuse, tuple(kind for _, kind in plan), hidden_layer)
    done = _FAST_OK.setdefault(model, {})
    if key not in done:
        rows = ([i for i in order if enc.image[i] is not None] or list(order))[:1]
        batch = collate(enc, rows, pad_id)
        want = hidden_layer is not None
        try:
            plain = forward_answers(model, batch, output_hidden_states=want)
            with _fast_hooks(plan), _fast_batch(plan, *_answer_k(batch)):
                inputs = ImageFeatures(model, enc, [rows]).inputs(batch, rows) if reuse else None
                fast = forward_answers(model, batch, inputs, output_hidden_states=want)
            mask = plain[3]
            ok = torch.allclose(plain[1][mask], fast[1][mask], rtol=1e-5, atol=1e-5)
            if ok and want:
                ok = torch.allclose(language_hidden_states(plain[0])[hidden_layer],
                                    language_hidden_states(fast[0])[hidden_layer], rtol=1e-5, atol=1e-5)
        except (TypeError, ValueError, RuntimeError, IndexError, AttributeError, KeyError):
            ok = False
        done[key] = bool(ok)
    return done[key]


def _fast_plan(model, enc: Encoded, order: Sequence[int], pad_id: int, hidden_layer: int | None,
               answer_tail: bool, reuse: bool, packed_linear: bool = True) -> tuple[bool, list[tuple[torch.nn.Module, str]]]:
    """(reuse images, hook plan) that passed `_fast_ok`: the whole fast path, else all of it but
    the oneDNN linears, else the plain pass."""
    for packed in ((True, False) if packed_linear else (False,)):
        plan = _hook_plan(model, hidden_layer, answer_tail, reuse, packed)
        if not (reuse or plan) or not len(enc) or _fast_ok(model, enc, order, pad_id, hidden_layer, reuse, plan):
            return reuse, plan
        if not any(kind == "packed" for _, kind in plan):
            break
    return False, []


def _batch_scores(model, batch: dict, inputs: dict | None, hidden_layer: int | None, keep_dist: bool) -> dict:
    """Everything `Scores` holds for one collated batch, as numpy arrays (one host copy each):
    per-token values of the answer tokens in row order ("row": their row), per-row reductions."""
    res, logits, targets, mask = forward_answers(model, batch, inputs, output_hidden_states=hidden_layer is not None)
    logits, tgt = logits[mask], targets[mask]  # [tokens, V]: the answer tokens only
    row = mask.nonzero()[:, 0]
    logp = torch.log_softmax(logits, dim=-1)
    p = logp.exp()
    tlp = logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
    mu = (p * logp).sum(-1)
    sigma = (p * (logp - mu.unsqueeze(-1)).pow(2)).sum(-1).clamp(min=1e-12).sqrt()  # Var[log p], no cancellation
    top2 = p.topk(2, dim=-1).values if p.shape[-1] > 1 else p.new_zeros(p.shape[0], 2)
    n, count = mask.shape[0], mask.sum(-1)
    cnt = count.clamp(min=1).double()

    def per_row(v: torch.Tensor) -> torch.Tensor:
        return torch.zeros(n, dtype=torch.float64).index_add_(0, row, v.double())

    res_ = {
        "count": count.cpu().numpy(),
        "tlp": tlp.cpu().numpy(),
        "z": ((tlp - mu) / sigma).cpu().numpy(),
        "tgt": tgt.cpu().numpy(),
        "p": p.cpu().numpy() if keep_dist else None,
        "logprob_sum": per_row(tlp).numpy(),
        "max_prob": (per_row(top2[:, 0]) / cnt).numpy(),
        "neg_entropy": (per_row(mu) / cnt).numpy(),
        "margin": (per_row(top2[:, 0] - top2[:, 1]) / cnt).numpy(),
        "exact": (per_row((logits.argmax(-1) != tgt).double()) == 0).numpy(),
        "pooled": None,
    }
    if hidden_layer is not None:
        hs = language_hidden_states(res)[hidden_layer]
        am = batch["attention_mask"].unsqueeze(-1).to(hs.dtype)
        res_["pooled"] = ((hs * am).sum(1) / am.sum(1)).float().cpu().numpy()
    return res_


def _streams(model, n_batches: int, workers: int | None) -> tuple[int, int]:
    """(parallel batch streams, intra-op threads per stream). On CPU the cores are split between
    two streams of independent batches: small matrices scale poorly over intra-op threads, and
    intra-op threads that wait for each other stall badly on cores shared with other processes."""
    threads = torch.get_num_threads()
    if workers is None:
        on_cpu = all(p.device.type == "cpu" for p in model.parameters())
        workers = min(2, threads) if on_cpu else 1
    workers = max(1, min(workers, n_batches))
    return workers, max(1, threads // workers)


@torch.inference_mode()
def score(model, enc: Encoded, pad_id: int, batch_size: int = 64, keep_dist: bool = False,
          hidden_layer: int | None = -2, progress: bool = False, reuse_images: bool = True,
          workers: int | None = None, answer_tail: bool = True, packed_linear: bool = True) -> Scores:
    """Scores of every sequence of `enc` (batches of similar length, scattered back to input order).

    `hidden_layer=None` skips the hidden states (`hidden` is then [n, 0]). `reuse_images=False`
    runs the vision tower on every row's pixels (the plain forward pass) instead of once per
    distinct image. `workers` parallel streams of batches (default: 2 on CPU, each with half the
    intra-op threads; 1 on an accelerator); results do not depend on it. `answer_tail` runs the
    last decoder layer's query/output projections, MLP and output head on the answer positions
    only (their output elsewhere feeds nothing kept). `packed_linear` computes the linear layers
    through oneDNN with weights reordered once per call (CPU, float32). The fast parts are checked
    once per model against the plain pass; `reuse_images=False, answer_tail=False,
    packed_linear=False, workers=1` is the plain pass itself."""
    n = len(enc)
    out = {k: np.zeros(n, dtype=np.float64) for k in ("logprob_sum", "max_prob", "neg_entropy", "margin")}
    n_tok = np.zeros(n, dtype=np.int64)
    exact = np.zeros(n, dtype=bool)
    hidden: np.ndarray | None = None if hidden_layer is not None else np.zeros((n, 0), dtype=np.float32)
    tok_lp: list = [None] * n
    tok_z: list = [None] * n
    tok_ids: list = [None] * n
    dists: list | None = [None] * n if keep_dist else None
    order = _order(enc)
    batches = [order[s:s + batch_size] for s in range(0, n, batch_size)]
    n_streams, per_stream = _streams(model, len(batches), workers)
    streams = [batches[w::n_streams] for w in range(n_streams)]
    was_training = model.training
    model.eval()
    try:
        reuse = reuse_images and any(i is not None for i in enc.image) and _supports_feature_reuse(model)
        reuse, plan = _fast_plan(model, enc, order, pad_id, hidden_layer, answer_tail, reuse, packed_linear)
    except BaseException:
        model.train(was_training)
        raise
    # one feature cache per stream (uses counted over the stream's own batches)
    feats = [ImageFeatures(model, enc, st) if reuse else None for st in streams]

    def run(w: int, emit: Callable) -> None:
        if n_streams > 1:
            torch.set_num_threads(per_stream)
        with torch.inference_mode():  # thread-local: again in each worker
            for idx in streams[w]:
                batch = collate(enc, idx, pad_id)
                with _fast_batch(plan, *_answer_k(batch)):
                    inputs = feats[w].inputs(batch, idx) if feats[w] is not None else None
                    res = _batch_scores(model, batch, inputs, hidden_layer, keep_dist)
                emit(idx, res)

    def scatter(idx: Sequence[int], res: dict) -> None:
        nonlocal hidden
        idx_t = np.asarray(idx, dtype=np.int64)
        ends = np.cumsum(res["count"])
        for r, i in enumerate(idx):
            a, b = ends[r] - res["count"][r], ends[r]
            tok_lp[i] = res["tlp"][a:b].astype(np.float64)
            tok_z[i] = res["z"][a:b].astype(np.float64)
            tok_ids[i] = res["tgt"][a:b]
            if dists is not None:
                dists[i] = res["p"][a:b]
        for k in out:
            out[k][idx_t] = res[k]
        n_tok[idx_t] = res["count"]
        exact[idx_t] = res["exact"]
        if res["pooled"] is not None:
            if hidden is None:
                hidden = np.zeros((n, res["pooled"].shape[1]), dtype=np.float32)
            hidden[idx_t] = res["pooled"]

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(batches), desc="score", unit="batch", mininterval=2.0)
    try:
        with _fast_hooks(plan):
            _run_streams(n_streams, len(batches), run, scatter, bar)
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    return Scores(hidden=hidden if hidden is not None else np.zeros((0, 0), np.float32), n_tokens=n_tok,
                  exact=exact, token_logprobs=tok_lp, token_zpp=tok_z, token_ids=tok_ids, dist=dists, **out)


def _run_streams(n_streams: int, n_batches: int, run: Callable, scatter: Callable, bar) -> None:
    """`run(w, emit)` for every stream w: stream 0 in the calling thread, the others in worker
    threads (each stream sets its own intra-op thread count; restored here). Every emitted batch
    is scattered in the calling thread, in between its own batches and at the end."""
    import queue

    done: queue.Queue = queue.Queue()
    errors: list[BaseException] = []
    count = 0

    def take(idx, res) -> None:
        nonlocal count
        scatter(idx, res)
        count += 1
        if bar is not None:
            bar.update()

    def emit_here(idx, res) -> None:
        take(idx, res)
        while True:  # what the workers finished meanwhile
            try:
                item = done.get_nowait()
            except queue.Empty:
                return
            if item is None:  # a worker failed
                raise errors[0]
            take(*item)

    if n_streams == 1:
        run(0, emit_here)
        return

    stop = threading.Event()

    class Stopped(Exception):
        pass

    def emit_there(idx, res) -> None:
        if stop.is_set():
            raise Stopped
        done.put((idx, res))

    def work(w: int) -> None:
        try:
            run(w, emit_there)
        except Stopped:
            pass
        except BaseException as err:  # re-raised in the calling thread
            errors.append(err)
            done.put(None)

    threads = torch.get_num_threads()
    workers = [threading.Thread(target=work, args=(w,), name=f"score-{w}", daemon=True) for w in range(1, n_streams)]
    try:
        for t in workers:
            t.start()
        run(0, emit_here)
        while count < n_batches and not errors:
            item = done.get()
            if item is not None:
                take(*item)
        if errors:
            raise errors[0]
    finally:
        stop.set()  # on an error here, workers stop after their current batch
        for t in workers:
            t.join()
        torch.set_num_threads(threads)


def _packed_option_sums(model, penc: Encoded, targets: Sequence[Sequence[Sequence[int]]], pad_id: int,
                        batch_size: int, workers: int | None) -> list[np.ndarray]:
    """Summed log-probability of every target continuation of every prompt of `penc`, all
    continuations of a prompt packed after it in one sequence: each attends to the prompt and to
    itself only (4D mask) and is positioned right after the prompt, as if it were alone
    (`targets[r]`: the token lists of prompt r, EOS included)."""
    n = len(penc)
    sums: list[np.ndarray] = [np.zeros(0)] * n
    order = sorted(range(n), key=lambda i: (penc.prompt_len[i] + sum(len(t) for t in targets[i]), i))
    batches = [order[s:s + batch_size] for s in range(0, n, batch_size)]
    n_streams, per_stream = _streams(model, len(batches), workers)
    streams = [batches[w::n_streams] for w in range(n_streams)]
    was_training = model.training
    model.eval()
    try:
        reuse = any(i is not None for i in penc.image) and _supports_feature_reuse(model)
        reuse, plan = _fast_plan(model, penc, order, pad_id, None, True, reuse)
    except BaseException:
        model.train(was_training)
        raise
    feats = [ImageFeatures(model, penc, st) if reuse else None for st in streams]
    dtype = next(model.parameters()).dtype

    def pack(idx: Sequence[int]):
        seqs = [penc.input_ids[i][:penc.prompt_len[i]] + [t for tgt in targets[i] for t in tgt] for i in idx]
        width = max(len(q) for q in seqs)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        seg = torch.full((len(idx), width), -1, dtype=torch.long)  # -1 padding, 0 prompt, j + 1 option j
        pos = torch.zeros((len(idx), width), dtype=torch.long)
        # (row, kept-logit column, target) per option token; kept columns are the last `keep`
        rows_, cols, tgts = [], [], []
        tail = max(len(q) - penc.prompt_len[i] for q, i in zip(seqs, idx))
        keep = tail + 1
        for r, (i, q) in enumerate(zip(idx, seqs)):
            off, plen = width - len(q), penc.prompt_len[i]
            ids[r, off:] = torch.tensor(q)
            seg[r, off:off + plen] = 0
            pos[r, off:off + plen] = torch.arange(off, off + plen)
            at = off + plen
            for j, tgt in enumerate(targets[i]):
                seg[r, at:at + len(tgt)] = j + 1
                pos[r, at:at + len(tgt)] = torch.arange(off + plen, off + plen + len(tgt))
                for t, tok in enumerate(tgt):  # predicted from the prompt's last token, then its own
                    rows_.append(r)
                    cols.append((off + plen - 1 if t == 0 else at + t - 1) - (width - keep))
                    tgts.append(tok)
                at += len(tgt)
        qk = torch.arange(width)
        same = (seg.unsqueeze(2) == seg.unsqueeze(1)) | (seg.unsqueeze(1) == 0)
        allowed = same & (seg.unsqueeze(1) >= 0) & (qk.view(1, 1, -1) <= qk.view(1, -1, 1))
        allowed |= torch.eye(width, dtype=torch.bool).unsqueeze(0)  # padding rows see themselves
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min).unsqueeze(1)
        return ids, mask, pos, keep, (torch.tensor(rows_), torch.tensor(cols), torch.tensor(tgts))

    def run(w: int, emit: Callable) -> None:
        if n_streams > 1:
            torch.set_num_threads(per_stream)
        with torch.inference_mode():
            for idx in streams[w]:
                ids, mask, pos, keep, (r_, c_, t_) = pack(idx)
                batch = {k: v for k, v in collate(penc, idx, pad_id, with_answer=False).items()
                         if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
                batch.update(input_ids=ids, attention_mask=mask)
                with _fast_batch(plan, keep):
                    inputs = feats[w].inputs(batch, idx) if feats[w] is not None else model_inputs(batch, model)
                    logits = model(**inputs, position_ids=pos, logits_to_keep=keep).logits
                lp = torch.log_softmax(logits.float(), dim=-1)[r_, c_, t_].double().cpu().numpy()
                emit(idx, lp)

    def scatter(idx: Sequence[int], lp: np.ndarray) -> None:
        at = 0
        for i in idx:
            ends = at + np.cumsum([len(t) for t in targets[i]])
            sums[i] = np.array([lp[a:b].sum() for a, b in zip([at, *ends[:-1]], ends)])
            at = int(ends[-1])

    try:
        with _fast_hooks(plan):
            _run_streams(n_streams, len(batches), run, scatter, None)
    finally:
        model.train(was_training)
    return sums


_SHARED_OK: "weakref.WeakKeyDictionary[torch.nn.Module, bool]" = weakref.WeakKeyDictionary()


@torch.inference_mode()
def choose_options(model, processor, rows: Sequence[dict], images: Callable, batch_size: int = 64,
                   shared_prompt: bool = True, workers: int | None = None, enc: Encoded | None = None) -> np.ndarray:
    """Index of the most likely option (summed answer log-probability) per row; -1 without options.

    The options of a row share its prompt: with `shared_prompt` the row is one sequence, the prompt
    once and every option after it, each option seeing only the prompt and itself (checked once per
    model against scoring every option sequence in full, which is the path otherwise). `enc`: the
    rows already encoded (their prompts are reused, no image is processed again)."""
    flat_rows, flat_answers, owner = [], [], []
    for r, row in enumerate(rows):
        for opt in list(row["options"]) if row.get("options") is not None else []:
            flat_rows.append(row)
            flat_answers.append(opt)
            owner.append(r)
    choice = np.full(len(rows), -1, dtype=np.int64)
    if not flat_rows:
        return choice
    pad_id = processor.tokenizer.pad_token_id
    enc = (repeat(enc, owner, processor.tokenizer, flat_answers) if enc is not None
           else encode(processor, flat_rows, images, answers=flat_answers))
    sums = None
    if shared_prompt:
        first: dict[int, int] = {}
        for k, r in enumerate(owner):
            first.setdefault(r, k)
        heads = list(first.values())  # one option sequence per row: its prompt
        penc = enc.take(heads)
        slot = {r: j for j, r in enumerate(first)}
        targets: list[list[list[int]]] = [[] for _ in heads]
        for k, r in enumerate(owner):
            targets[slot[r]].append(enc.input_ids[k][enc.prompt_len[k]:])
        if model not in _SHARED_OK:
            try:
                got = _packed_option_sums(model, penc.take([0]), targets[:1], pad_id, batch_size, 1)[0]
                ks = [k for k, r in enumerate(owner) if slot[r] == 0]
                want = score(model, enc.take(ks), pad_id, batch_size, hidden_layer=None, workers=1).logprob_sum
                _SHARED_OK[model] = bool(np.allclose(got, want, rtol=1e-5, atol=1e-4))
            except (TypeError, ValueError, RuntimeError, IndexError, AttributeError, KeyError):
                _SHARED_OK[model] = False
        if _SHARED_OK[model]:
            per_row = _packed_option_sums(model, penc, targets, pad_id, batch_size, workers)
            sums = np.zeros(len(owner), dtype=np.float64)
            seen = [0] * len(heads)
            for k, r in enumerate(owner):
                sums[k] = per_row[slot[r]][seen[slot[r]]]
                seen[slot[r]] += 1
    if sums is None:
        sums = score(model, enc, pad_id, batch_size, hidden_layer=None, workers=workers).logprob_sum
    best: dict[int, tuple[float, int]] = {}
    counters: dict[int, int] = {}
    for k, r in enumerate(owner):
        j = counters.get(r, 0)
        counters[r] = j + 1
        if r not in best or sums[k] > best[r][0]:
            best[r] = (sums[k], j)
    for r, (_, j) in best.items():
        choice[r] = j
    return choice


@torch.inference_mode()
def generate(model, processor, enc: Encoded, batch_size: int = 64, max_new_tokens: int = 24,
             packed_linear: bool = True) -> list[str]:
    """Batched greedy decoding of the prompts of `enc` (left padding); answers stripped.
    `packed_linear`: the linear layers through oneDNN (as in `score`, checked the same way)."""
    tok = processor.tokenizer
    texts: list[str] = [""] * len(enc)
    order = _order(enc)
    was_training = model.training
    model.eval()
    try:
        _, plan = _fast_plan(model, enc, order, tok.pad_token_id, None, False, False, packed_linear)
        with _fast_hooks(plan), _fast_batch(plan, None):
            for s in range(0, len(order), batch_size):
                idx = order[s:s + batch_size]
                batch = collate(enc, idx, tok.pad_token_id, side="left", with_answer=False)
                gen = arch_generate(model, model_inputs(batch), max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
                new = gen[:, batch["input_ids"].shape[1]:]
                for r, i in enumerate(idx):
                    texts[i] = tok.decode(new[r], skip_special_tokens=True).strip()
    finally:
        model.train(was_training)
    return texts


def greedy_texts(model, processor, enc: Encoded, exact: np.ndarray, batch_size: int = 64,
                 max_new_tokens: int = 24, skip: np.ndarray | None = None) -> list[str]:
    """`generate`'s texts, decoding only rows whose greedy answer is not known already: where the
    teacher-forced argmax is the target at every answer position including EOS (`exact`, from
    `score`), greedy decoding emits exactly the target tokens and stops, so the text is the target
    decoded (up to float rounding between the cached and the full pass, which the engine's tests
    and benchmarks/eval.py check). A memorising model's retain rows skip decoding entirely. Rows
    where `skip` is true are not decoded at all (text "")."""
    tok = processor.tokenizer
    texts: list[str] = [""] * len(enc)
    todo = []
    for i, ids in enumerate(enc.input_ids):
        answer = ids[enc.prompt_len[i]:]
        if skip is not None and skip[i]:
            continue
        if exact[i] and len(answer) <= max_new_tokens:
            texts[i] = tok.decode(answer, skip_special_tokens=True).strip()
        else:
            todo.append(i)
    if todo:
        for i, text in zip(todo, generate(model, processor, enc.take(todo), batch_size, max_new_tokens)):
            texts[i] = text
    return texts


@torch.inference_mode()
def generate_per_sample(model, processor, rows: Sequence[dict], images: Callable,
                        max_new_tokens: int = 24) -> list[str]:
    """Reference baseline: the usual one-row-at-a-time processor -> generate -> decode loop."""
    from mmunlearn.models.encode import prompt

    tok = processor.tokenizer
    texts = []
    was_training = model.training
    model.eval()
    for row in rows:
        text = prompt(processor, row)
        if isinstance(row.get("image"), str) and row["image"]:
            inputs = processor(text=[text], images=[images(row["image"])], return_tensors="pt")
        else:
            inputs = tok([text], return_tensors="pt", add_special_tokens=False)
        out = arch_generate(model, dict(inputs), max_new_tokens=max_new_tokens, do_sample=False,
                            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        texts.append(tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    model.train(was_training)
    return texts


@dataclass
class Evaluation:
    """Per-row results in input order plus the raw scores of the answer pass."""

    frame: pd.DataFrame
    scores: Scores


def evaluate(model, processor, rows: Sequence[dict], images: Callable, batch_size: int = 64,
             keep_dist: bool = False, hidden_layer: int = -2, enc: Encoded | None = None,
             progress: bool = False, option_texts: bool = True) -> Evaluation:
    """Per row, in input order: the greedy answer (decoded only where teacher forcing is not
    exact), the chosen option, and `correct` by the one row definition (`metrics.rows.row_correct`).
    `option_texts=False`: rows answered by an option get no greedy text ("": it would feed only
    ROUGE, never `correct`), for passes that need correctness alone."""
    from mmunlearn.metrics.rows import row_correct

    enc = enc if enc is not None else encode(processor, rows, images)
    s = score(model, enc, processor.tokenizer.pad_token_id, batch_size, keep_dist, hidden_layer, progress)
    choice = choose_options(model, processor, rows, images, batch_size, enc=enc)
    by_option = np.array([r["form"] == "classification" for r in rows], dtype=bool) & (np.asarray(choice) >= 0)
    skip = None if option_texts else by_option
    texts = greedy_texts(model, processor, enc, s.exact, batch_size, skip=skip)
    frame = pd.DataFrame({"qa_id": [r["qa_id"] for r in rows], "form": [r["form"] for r in rows],
                          "view": [r["view"] for r in rows]})
    frame["generated"] = texts
    frame["correct"] = row_correct(rows, choice, texts)
    frame["chosen_option"] = choice
    frame["logprob_sum"] = s.logprob_sum
    frame["logprob_mean"] = s.logprob_mean
    frame["n_tokens"] = s.n_tokens
    frame["tf_exact"] = s.exact
    return Evaluation(frame, s)
