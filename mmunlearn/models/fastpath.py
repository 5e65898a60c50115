"""Algorithmic fast paths of the evaluation engine: exact, device-independent savings.

- `images`: the vision tower (and projector) runs once per distinct image of a scoring call, not
  once per row (every image is asked about in several rows); the model gets the features as
  `mm_encoder_outputs` (transformers 5 VLMs: LLaVA, Qwen2-VL, BLIP-2).
- `tail`: the last decoder layer's position-wise blocks (query / output projections, MLP) and the
  output head run on the answer positions only. Nothing kept reads that layer's output elsewhere:
  logits are read at the answer positions, and the pooled hidden state is an earlier layer's.
- `option_sums`: the options of a classification row are packed after one copy of its prompt,
  each option attending to the prompt and to itself only (a 4-D attention mask), positioned as
  if it were alone.

Each part is checked once per model configuration (its class and `config`, not the object) against
the reference pass of `models.engine` on one row; a configuration that fails gets the reference
pass. `benchmarks/fastpaths.py` measures what each part saves.
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager, nullcontext
from typing import Sequence

import numpy as np
import torch

from mmunlearn.models.arch import language_hidden_states, needs_image_features, unwrap
from mmunlearn.models.encode import IGNORE, Encoded, collate
from mmunlearn.models.scoring import forward_answers, model_device, model_inputs, to_model

PARTS = ("images", "tail", "options")  # what `fast=` may name (`options`: `choose_options` only)
_CHECKED: dict[tuple, bool] = {}  # (model class, config, what was checked) -> exact


def config_key(model, *what) -> tuple:
    """What a check's verdict depends on: the architecture and its configuration, not the weights."""
    inner = unwrap(model)
    config = getattr(inner, "config", None)
    return (type(inner).__qualname__, config.to_json_string() if config is not None else "", *what)


def checked(key: tuple, check) -> bool:
    """`check()` once per key; an exception of the architecture's making counts as a failure."""
    if key not in _CHECKED:
        try:
            _CHECKED[key] = bool(check())
        except (TypeError, ValueError, RuntimeError, IndexError, AttributeError, KeyError):
            _CHECKED[key] = False
    return _CHECKED[key]


def supports_feature_reuse(model) -> bool:
    """Whether the model takes precomputed image features (`mm_encoder_outputs`) and computes them
    with `get_image_features`."""
    inner = unwrap(model)
    try:
        params = inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):
        return False
    return "mm_encoder_outputs" in params and callable(getattr(inner, "get_image_features", None))


class ImageFeatures:
    """Vision features once per distinct image of an `Encoded`, kept from the first batch that
    needs them to the last (uses counted ahead over the planned batches) within `budget_bytes`;
    beyond it they are recomputed. `inputs(batch, idx)`: the batch's model inputs with the pixels
    replaced by the features, in the model's own output type (BLIP-2's carries Q-Former fields) and
    layout (a list per image for LLaVA, one stacked tensor for BLIP-2)."""

    def __init__(self, model, enc: Encoded, batches: Sequence[Sequence[int]], budget_bytes: int = 256 << 20):
        self.model, self.enc, self.budget = unwrap(model), enc, budget_bytes
        self.uses: dict[str, int] = {}
        for idx in batches:
            for name in {enc.image[i] for i in idx} - {None}:
                self.uses[name] = self.uses.get(name, 0) + 1
        self.cache: dict[str, torch.Tensor] = {}
        self.size = 0
        self.output_type, self.stacked = None, False

    def _compute(self, names: Sequence[str]) -> dict[str, torch.Tensor]:
        pix = {k: torch.cat([self.enc.pixels[n][k] for n in names], dim=0) for k in self.enc.pixels[names[0]]}
        pix = to_model(pix, self.model)
        out = self.model.get_image_features(**pix, return_dict=True)
        feats = out.pooler_output
        self.output_type, self.stacked = type(out), isinstance(feats, torch.Tensor)
        if len(feats) != len(names):
            raise ValueError(f"{len(feats)} image features for {len(names)} images")
        return dict(zip(names, feats))

    def _keep(self, distinct: Sequence[str], feats: dict[str, torch.Tensor]) -> None:
        for n in distinct:  # keep what later batches need, drop what they do not
            self.uses[n] = self.uses.get(n, 1) - 1
            if self.uses[n] <= 0:
                if n in self.cache:
                    self.size -= self.cache.pop(n).nbytes
            elif n not in self.cache and self.size + feats[n].nbytes <= self.budget:
                self.cache[n] = feats[n]
                self.size += feats[n].nbytes

    def inputs(self, batch: dict, idx: Sequence[int]) -> dict:
        names = [self.enc.image[i] for i in idx if self.enc.image[i] is not None]
        if not names:
            return model_inputs(batch, self.model)
        distinct = list(dict.fromkeys(names))
        need = [n for n in distinct if n not in self.cache]
        feats = {**{n: self.cache[n] for n in distinct if n in self.cache}, **(self._compute(need) if need else {})}
        self._keep(distinct, feats)
        inputs = {k: v for k, v in model_inputs(batch).items() if k != "pixel_values"}
        if needs_image_features(self.model):
            inputs["pixel_values"] = None  # a required argument of BLIP-2's forward
        pooled = [feats[n] for n in names]
        inputs["mm_encoder_outputs"] = {"image": self.output_type(pooler_output=torch.stack(pooled) if self.stacked
                                                                  else pooled)}
        return inputs


def tail_modules(model, hidden_layer: int | None) -> list[torch.nn.Module]:
    """The last decoder layer's query / output projections and MLP, when nothing kept needs that
    layer's output outside the answer positions (the pooled `hidden_layer` is an earlier one). The
    decoder is looked up one level further where the first is a causal LM (BLIP-2)."""
    get = getattr(unwrap(model), "get_decoder", None)
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
    attn = getattr(layers[-1], "self_attn", None)
    mods = [getattr(attn, "q_proj", None), getattr(attn, "o_proj", None), getattr(layers[-1], "mlp", None)]
    return [m for m in mods if isinstance(m, torch.nn.Module)]


class AnswerTail:
    """Hooks that run `modules` on the last `k` positions only (zeros elsewhere: nothing kept reads
    them) and the output head on the `sel` [batch, k] positions among them, while `keep(k, sel)` is
    active. The keys and values of the last layer still cover every position."""

    def __init__(self, model, modules: Sequence[torch.nn.Module]):
        head = unwrap(model).get_output_embeddings()
        self.modules, self.head = list(modules), head
        self.k: int | None = None
        self.sel: torch.Tensor | None = None
        self.shapes: dict[int, torch.Size] = {}

    @contextmanager
    def installed(self):
        handles = []
        for m in self.modules:
            handles += [m.register_forward_pre_hook(self._pre), m.register_forward_hook(self._post)]
        handles += [self.head.register_forward_pre_hook(self._head_pre), self.head.register_forward_hook(self._post)]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()

    @contextmanager
    def keep(self, k: int, sel: torch.Tensor | None = None):
        self.k, self.sel, self.shapes = k, sel, {}
        try:
            yield
        finally:
            self.k, self.sel, self.shapes = None, None, {}

    def _pre(self, module, args):
        x = args[0]
        if self.k is None or x.dim() != 3 or self.k > x.shape[1]:
            return None
        self.shapes[id(module)] = x.shape
        x = x[:, -self.k:]
        return (x[self.sel] if self.sel is not None else x.contiguous(),) + tuple(args[1:])

    def _head_pre(self, module, args):
        x = args[0]
        if self.k is None or self.sel is None or x.shape[:2] != self.sel.shape:
            return None
        self.shapes[id(module)] = x.shape
        return (x[self.sel],) + tuple(args[1:])

    def _post(self, module, args, output):
        shape = self.shapes.pop(id(module), None)
        if shape is None:
            return None
        out = output.new_zeros(shape[:-1] + output.shape[-1:])
        if output.dim() == 2:  # gathered at `sel`
            out[:, -self.sel.shape[1]:][self.sel] = output
        else:
            out[:, -output.shape[1]:] = output
        return out


def answer_positions(batch: dict) -> tuple[int, torch.Tensor]:
    """(k, sel): the trailing positions whose logits `forward_answers` keeps and, among them
    [batch, k], those predicting an answer token (the only logits scoring reads)."""
    labels = batch["labels"]
    k = int((labels != IGNORE).sum(1).max()) + 1
    sel = torch.zeros((labels.shape[0], k), dtype=torch.bool, device=labels.device)
    if k > 1:
        sel[:, :-1] = labels[:, -(k - 1):] != IGNORE
    return k, sel


class FastPath:
    """The checked fast parts of one scoring call: `forward_answers(batch, idx)` is
    `scoring.forward_answers` with image features reused and the last layer on the answer tail."""

    def __init__(self, model, enc: Encoded, batches: Sequence[Sequence[int]], parts: Sequence[str],
                 hidden_layer: int | None):
        self.model, self.parts = model, tuple(parts)
        self.images = ImageFeatures(model, enc, batches) if "images" in parts else None
        self.tail = AnswerTail(model, tail_modules(model, hidden_layer)) if "tail" in parts else None

    def forward_answers(self, batch: dict, idx: Sequence[int], **kwargs):
        batch = to_model(batch, self.model)
        inputs = self.images.inputs(batch, idx) if self.images is not None else None
        if self.tail is None:
            return forward_answers(self.model, batch, inputs, **kwargs)
        with self.tail.keep(*answer_positions(batch)):
            return forward_answers(self.model, batch, inputs, **kwargs)

    @staticmethod
    def candidates(model, enc: Encoded, hidden_layer: int | None) -> tuple[str, ...]:
        """The parts that apply to this model and these rows."""
        parts = []
        if any(i is not None for i in enc.image) and supports_feature_reuse(model):
            parts.append("images")
        if tail_modules(model, hidden_layer) and callable(getattr(unwrap(model), "get_output_embeddings", None)):
            parts.append("tail")
        return tuple(parts)

    @classmethod
    @contextmanager
    def for_scoring(cls, model, enc: Encoded, pad_id: int, batches, hidden_layer: int | None,
                    fast: bool | Sequence[str] = True):
        """The FastPath of the checked parts (None: the reference pass), hooks installed meanwhile.
        `fast`: True = every part that applies, False = none, or the names of the parts to try."""
        parts = cls.candidates(model, enc, hidden_layer) if fast and len(enc) else ()
        if not isinstance(fast, bool):
            unknown = set(fast) - set(PARTS)
            if unknown:
                raise ValueError(f"fast path parts {sorted(unknown)}: not among {PARTS}")
            parts = tuple(p for p in parts if p in fast)
        parts = next((p for p in (parts, *((q,) for q in parts)) if p and cls.exact(model, enc, pad_id, p, hidden_layer)), ())
        path = cls(model, enc, batches, parts, hidden_layer) if parts else None
        if path is None or path.tail is None:
            yield path
            return
        with path.tail.installed():
            yield path

    @classmethod
    def exact(cls, model, enc: Encoded, pad_id: int, parts: Sequence[str], hidden_layer: int | None) -> bool:
        """Whether `parts` reproduce the reference pass (logits at the answer positions and the
        kept hidden state, to 1e-5) on one row, with an image when there is one; once per config."""
        def check() -> bool:
            row = ([i for i in range(len(enc)) if enc.image[i] is not None] or [0])[:1]
            batch, want = collate(enc, row, pad_id), hidden_layer is not None
            plain = forward_answers(model, batch, output_hidden_states=want)
            path = cls(model, enc, [row], parts, hidden_layer)
            with (path.tail.installed() if path.tail is not None else nullcontext()):
                fast = path.forward_answers(batch, row, output_hidden_states=want)
            ok = torch.allclose(plain[1][plain[3]], fast[1][plain[3]], rtol=1e-5, atol=1e-5)
            if ok and want:
                ok = torch.allclose(language_hidden_states(plain[0])[hidden_layer],
                                    language_hidden_states(fast[0])[hidden_layer], rtol=1e-5, atol=1e-5)
            return ok
        return checked(config_key(model, "score", tuple(parts), hidden_layer), check)


def pack_options(penc: Encoded, targets: Sequence[Sequence[Sequence[int]]], idx: Sequence[int], pad_id: int,
                 dtype: torch.dtype):
    """Prompts `idx` of `penc`, each followed by all its option continuations `targets[i]` (token
    lists, EOS included): (ids, 4-D additive mask, position ids, k = trailing logits to keep,
    (row, kept-logit column, target) per option token)."""
    seqs = [penc.input_ids[i][:penc.prompt_len[i]] + [t for tgt in targets[i] for t in tgt] for i in idx]
    width = max(len(q) for q in seqs)
    ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
    seg = torch.full((len(idx), width), -1, dtype=torch.long)  # -1 padding, 0 prompt, j + 1 option j
    pos = torch.zeros((len(idx), width), dtype=torch.long)
    keep = max(len(q) - penc.prompt_len[i] for q, i in zip(seqs, idx)) + 1
    rows, cols, tgts = [], [], []
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
                rows.append(r)
                cols.append((off + plen - 1 if t == 0 else at + t - 1) - (width - keep))
                tgts.append(tok)
            at += len(tgt)
    qk = torch.arange(width)
    allowed = ((seg.unsqueeze(2) == seg.unsqueeze(1)) | (seg.unsqueeze(1) == 0)) & (seg.unsqueeze(1) >= 0)
    allowed &= qk.view(1, 1, -1) <= qk.view(1, -1, 1)
    allowed |= torch.eye(width, dtype=torch.bool).unsqueeze(0)  # padding rows see themselves
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min).unsqueeze(1)
    return ids, mask, pos, keep, (torch.tensor(rows), torch.tensor(cols), torch.tensor(tgts))


def packed_sums(model, penc: Encoded, targets, pad_id: int, batch_size: int, images: bool) -> list[np.ndarray]:
    """Summed log-probability of every option continuation of every prompt of `penc`, packed."""
    from mmunlearn.models.engine import eval_mode, length_batches

    sums: list[np.ndarray] = [np.zeros(0)] * len(penc)
    batches = length_batches([penc.prompt_len[i] + sum(map(len, targets[i])) for i in range(len(penc))], batch_size)
    feats = ImageFeatures(model, penc, batches) if images else None
    dtype, device = next(model.parameters()).dtype, model_device(model)
    with eval_mode(model):
        for idx in batches:
            ids, mask, pos, keep, (r_, c_, t_) = pack_options(penc, targets, idx, pad_id, dtype)
            ids, mask, pos, r_, c_, t_ = (t.to(device) for t in (ids, mask, pos, r_, c_, t_))
            batch = {k: v for k, v in collate(penc, idx, pad_id, with_answer=False).items()
                     if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
            batch = to_model({**batch, "input_ids": ids, "attention_mask": mask}, model)
            inputs = feats.inputs(batch, idx) if feats is not None else model_inputs(batch, model)
            logits = model(**inputs, position_ids=pos, logits_to_keep=keep).logits
            lp = torch.log_softmax(logits.float(), dim=-1)[r_, c_, t_].double().cpu().numpy()
            at = 0
            for i in idx:
                ends = at + np.cumsum([len(t) for t in targets[i]])
                sums[i] = np.array([lp[a:b].sum() for a, b in zip([at, *ends[:-1]], ends)])
                at = int(ends[-1])
    return sums


@torch.inference_mode()
def option_sums(model, flat: Encoded, owner: Sequence[int], pad_id: int, batch_size: int) -> np.ndarray | None:
    """Summed answer log-probability of every (prompt, option) sequence of `flat` (`owner[k]`: the
    row of sequence k; a row's sequences share its prompt), computed packed: one prompt copy per
    row. None where packing is not exact for this model configuration (checked on one row against
    scoring its option sequences in full)."""
    from mmunlearn.models.engine import score

    first: dict[int, int] = {}
    for k, r in enumerate(owner):
        first.setdefault(r, k)
    slot = {r: j for j, r in enumerate(first)}
    penc = flat.take(list(first.values()))  # one sequence per row: its prompt
    targets: list[list[list[int]]] = [[] for _ in first]
    for k, r in enumerate(owner):
        targets[slot[r]].append(flat.input_ids[k][flat.prompt_len[k]:])
    images = any(i is not None for i in penc.image) and supports_feature_reuse(model)

    def check() -> bool:
        got = packed_sums(model, penc.take([0]), targets[:1], pad_id, batch_size, images)[0]
        ks = [k for k, r in enumerate(owner) if slot[r] == 0]
        want = score(model, flat.take(ks), pad_id, batch_size, hidden_layer=None, fast=False).logprob_sum
        return np.allclose(got, want, rtol=1e-5, atol=1e-4)

    if not checked(config_key(model, "options", images), check):
        return None
    per_row = packed_sums(model, penc, targets, pad_id, batch_size, images)
    seen = [0] * len(first)
    sums = np.zeros(len(owner), dtype=np.float64)
    for k, r in enumerate(owner):
        sums[k] = per_row[slot[r]][seen[slot[r]]]
        seen[slot[r]] += 1
    return sums
