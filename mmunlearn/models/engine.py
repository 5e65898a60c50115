"""Batched evaluation: one teacher-forced pass per row feeds every logit-based metric.

The reference path, readable on its own: rows sorted by length into batches (left padding, so
every answer ends at the last position), one forward pass per batch, and per row
- the answer log-likelihood (sum, per token, mean) and teacher-forced exact match (argmax = gold
  at every answer token incl. EOS);
- per-token Min-K%++ z-scores and the paper's MIA features (max p, -entropy, top1-top2 margin);
- the mean-pooled hidden state of one layer (`hidden_layer`) and, on request, the next-token
  distributions over the answer positions.

`choose_options` picks a classification option by summed answer likelihood, `generate` is batched
greedy decoding, `greedy_texts` decodes only rows that teacher forcing does not settle, and
`evaluate` puts them together with the one row-correctness definition (`metrics.rows`).

The algorithmic fast paths (`models.fastpath`: vision features once per distinct image, the last
decoder layer on answer positions only, options packed after one prompt copy) are on by default
(`fast=True`); each is exact and checked against this path once per model configuration.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from mmunlearn.models.arch import generate as arch_generate
from mmunlearn.models.arch import language_hidden_states
from mmunlearn.models.encode import Encoded, collate, encode, repeat
from mmunlearn.models.scoring import forward_answers, model_inputs, to_model


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


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Row indices sorted by length (least padding), cut into batches; results go back by index."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


@contextmanager
def eval_mode(model):
    """`model.eval()` for the duration; its training flag restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def batch_scores(out, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, batch: dict,
                 hidden_layer: int | None, keep_dist: bool) -> dict:
    """Everything `Scores` holds for one batch (`scoring.forward_answers`'s outputs), as numpy:
    per-token values of the answer tokens in row order, per-row reductions."""
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

    def per_row(v: torch.Tensor) -> torch.Tensor:   # on the CPU, whatever the model's device
        return torch.zeros(n, dtype=torch.float64, device=v.device).index_add_(0, row, v.double()).cpu()

    res = {"count": count.cpu().numpy(), "tlp": tlp.cpu().numpy(), "z": ((tlp - mu) / sigma).cpu().numpy(),
           "tgt": tgt.cpu().numpy(), "p": p.cpu().numpy() if keep_dist else None,
           "logprob_sum": per_row(tlp).numpy(), "max_prob": (per_row(top2[:, 0]) / cnt).numpy(),
           "neg_entropy": (per_row(mu) / cnt).numpy(), "margin": (per_row(top2[:, 0] - top2[:, 1]) / cnt).numpy(),
           "exact": (per_row((logits.argmax(-1) != tgt).double()) == 0).numpy(), "pooled": None}
    if hidden_layer is not None:
        hs = language_hidden_states(out)[hidden_layer]
        am = batch["attention_mask"].unsqueeze(-1).to(hs.dtype)
        res["pooled"] = ((hs * am).sum(1) / am.sum(1)).float().cpu().numpy()
    return res


class _Rows:
    """Per-row arrays of `Scores`, filled batch by batch (`add`) in any order."""

    SUMS = ("logprob_sum", "max_prob", "neg_entropy", "margin")

    def __init__(self, n: int, keep_dist: bool):
        self.n = n
        self.sums = {k: np.zeros(n, dtype=np.float64) for k in self.SUMS}
        self.n_tok, self.exact = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
        self.tok_lp: list = [None] * n
        self.tok_z: list = [None] * n
        self.tok_ids: list = [None] * n
        self.dist: list | None = [None] * n if keep_dist else None
        self.hidden: np.ndarray | None = None

    def add(self, idx: Sequence[int], res: dict) -> None:
        idx_t = np.asarray(idx, dtype=np.int64)
        ends = np.cumsum(res["count"])
        for r, i in enumerate(idx):
            a, b = ends[r] - res["count"][r], ends[r]
            self.tok_lp[i], self.tok_z[i] = res["tlp"][a:b].astype(np.float64), res["z"][a:b].astype(np.float64)
            self.tok_ids[i] = res["tgt"][a:b]
            if self.dist is not None:
                self.dist[i] = res["p"][a:b]
        for k in self.SUMS:
            self.sums[k][idx_t] = res[k]
        self.n_tok[idx_t], self.exact[idx_t] = res["count"], res["exact"]
        if res["pooled"] is not None:
            if self.hidden is None:
                self.hidden = np.zeros((self.n, res["pooled"].shape[1]), dtype=np.float32)
            self.hidden[idx_t] = res["pooled"]

    def scores(self) -> Scores:
        hidden = self.hidden if self.hidden is not None else np.zeros((self.n, 0), np.float32)
        return Scores(hidden=hidden, n_tokens=self.n_tok, exact=self.exact, token_logprobs=self.tok_lp,
                      token_zpp=self.tok_z, token_ids=self.tok_ids, dist=self.dist, **self.sums)


def _bar(total: int, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="score", unit="batch", mininterval=2.0, disable=not progress)


@torch.inference_mode()
def score(model, enc: Encoded, pad_id: int, batch_size: int = 64, keep_dist: bool = False,
          hidden_layer: int | None = -2, progress: bool = False, fast: bool | Sequence[str] = True) -> Scores:
    """`Scores` of every sequence of `enc`, in input order. `hidden_layer=None` skips the hidden
    states (`hidden` is then [n, 0]). `fast=False` is the reference pass; `fast=True` takes the
    fast parts of `models.fastpath` that passed their check for this model configuration (or
    only those named, e.g. `("images",)`)."""
    from mmunlearn.models.fastpath import FastPath

    batches = length_batches([len(s) for s in enc.input_ids], batch_size)
    rows = _Rows(len(enc), keep_dist)
    want_hidden = hidden_layer is not None
    with eval_mode(model), FastPath.for_scoring(model, enc, pad_id, batches, hidden_layer, fast) as path, \
            _bar(len(batches), progress) as bar:
        for idx in batches:
            batch = to_model(collate(enc, idx, pad_id), model)
            out = (path.forward_answers(batch, idx, output_hidden_states=want_hidden) if path is not None
                   else forward_answers(model, batch, output_hidden_states=want_hidden))
            rows.add(idx, batch_scores(*out, batch, hidden_layer, keep_dist))
            bar.update()
    return rows.scores()


def option_sequences(rows: Sequence[dict]) -> tuple[list[dict], list[str], list[int]]:
    """One (row, option text, owner index) per option of every row that has options."""
    flat_rows, answers, owner = [], [], []
    for r, row in enumerate(rows):
        for opt in list(row["options"]) if row.get("options") is not None else []:
            flat_rows.append(row)
            answers.append(opt)
            owner.append(r)
    return flat_rows, answers, owner


def best_options(sums: np.ndarray, owner: Sequence[int], n_rows: int) -> np.ndarray:
    """Per row, the index of its highest-scoring option (the first on ties); -1 without options."""
    choice = np.full(n_rows, -1, dtype=np.int64)
    best: dict[int, float] = {}
    seen: dict[int, int] = {}
    for k, r in enumerate(owner):
        j = seen.get(r, 0)
        seen[r] = j + 1
        if r not in best or sums[k] > best[r]:
            best[r], choice[r] = sums[k], j
    return choice


@torch.inference_mode()
def choose_options(model, processor, rows: Sequence[dict], images: Callable, batch_size: int = 64,
                   enc: Encoded | None = None, fast: bool | Sequence[str] = True) -> np.ndarray:
    """Index of the most likely option (summed answer log-probability) per row; -1 without options.
    Reference: every (prompt, option) sequence scored in full. `fast`: the options of a row packed
    after one copy of its prompt (`fastpath.option_sums`, where checked for this configuration).
    `enc`: the rows already encoded (their prompts are reused, no image is processed again)."""
    from mmunlearn.models.fastpath import option_sums

    flat_rows, answers, owner = option_sequences(rows)
    if not flat_rows:
        return np.full(len(rows), -1, dtype=np.int64)
    pad_id = processor.tokenizer.pad_token_id
    flat = (repeat(enc, owner, processor.tokenizer, answers) if enc is not None
            else encode(processor, flat_rows, images, answers=answers))
    packed = fast is True or (not isinstance(fast, bool) and "options" in fast)
    sums = option_sums(model, flat, owner, pad_id, batch_size) if packed else None
    if sums is None:
        sums = score(model, flat, pad_id, batch_size, hidden_layer=None, fast=fast).logprob_sum
    return best_options(sums, owner, len(rows))


@torch.inference_mode()
def generate(model, processor, enc: Encoded, batch_size: int = 64, max_new_tokens: int = 24) -> list[str]:
    """Batched greedy decoding of the prompts of `enc` (left padding); answers stripped."""
    tok = processor.tokenizer
    texts: list[str] = [""] * len(enc)
    with eval_mode(model):
        for idx in length_batches(enc.prompt_len, batch_size):
            batch = collate(enc, idx, tok.pad_token_id, side="left", with_answer=False)
            gen = arch_generate(model, to_model(model_inputs(batch), model), max_new_tokens=max_new_tokens,
                                do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id).cpu()
            for r, i in enumerate(idx):
                texts[i] = tok.decode(gen[r, batch["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    return texts


def greedy_texts(model, processor, enc: Encoded, exact: np.ndarray, batch_size: int = 64,
                 max_new_tokens: int = 24, skip: np.ndarray | None = None) -> list[str]:
    """`generate`'s texts, decoding only rows whose greedy answer is not known already: where the
    teacher-forced argmax is the target at every answer position including EOS (`exact`), greedy
    decoding emits exactly the target tokens and stops, so the text is the target decoded (tests
    and benchmarks/eval.py check it). Rows where `skip` is true are not decoded at all (text "")."""
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


@dataclass
class Evaluation:
    """Per-row results in input order plus the raw scores of the answer pass."""

    frame: pd.DataFrame
    scores: Scores


def evaluate(model, processor, rows: Sequence[dict], images: Callable, batch_size: int = 64,
             keep_dist: bool = False, hidden_layer: int = -2, enc: Encoded | None = None,
             progress: bool = False, option_texts: bool = True, fast: bool | Sequence[str] = True) -> Evaluation:
    """Per row, in input order: the greedy answer (decoded only where teacher forcing is not
    exact), the chosen option, and `correct` by the one row definition (`metrics.rows.row_correct`).
    `option_texts=False`: rows answered by an option get no greedy text ("": it would feed only
    ROUGE, never `correct`), for passes that need correctness alone."""
    from mmunlearn.metrics.rows import row_correct

    enc = enc if enc is not None else encode(processor, rows, images)
    s = score(model, enc, processor.tokenizer.pad_token_id, batch_size, keep_dist, hidden_layer, progress, fast)
    choice = choose_options(model, processor, rows, images, batch_size, enc=enc, fast=fast)
    by_option = np.array([r["form"] == "classification" for r in rows], dtype=bool) & (choice >= 0)
    texts = greedy_texts(model, processor, enc, s.exact, batch_size, skip=None if option_texts else by_option)
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
