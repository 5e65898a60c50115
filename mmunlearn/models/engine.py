"""Batched evaluation engine: one teacher-forced pass per sample feeds every logit-based metric.

`score` returns, per sequence: the answer log-likelihood (sum, per token, mean), teacher-forced
exact match (argmax = gold at every answer token incl. EOS), per-token Min-K%++ z-scores, the
paper's MIA features (max p, -entropy, top1-top2 margin), the mean-pooled hidden state of one
layer and, on request, the next-token distributions over the answer positions. `choose_options`
scores classification options by answer likelihood; `generate` is batched greedy decoding with
left padding.
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from mmunlearn.models.encode import Encoded, collate, encode
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


@torch.inference_mode()
def score(model, enc: Encoded, pad_id: int, batch_size: int = 64, keep_dist: bool = False,
          hidden_layer: int = -2, progress: bool = False) -> Scores:
    n = len(enc)
    out = {k: np.zeros(n, dtype=np.float64) for k in ("logprob_sum", "max_prob", "neg_entropy", "margin")}
    n_tok = np.zeros(n, dtype=np.int64)
    exact = np.zeros(n, dtype=bool)
    hidden: np.ndarray | None = None
    tok_lp: list = [None] * n
    tok_z: list = [None] * n
    tok_ids: list = [None] * n
    dists: list | None = [None] * n if keep_dist else None
    order = _order(enc)
    batches = [order[s:s + batch_size] for s in range(0, n, batch_size)]
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="score", unit="batch", mininterval=2.0)
    was_training = model.training
    model.eval()
    for idx in batches:
        batch = collate(enc, idx, pad_id)
        res, logits, targets, mask = forward_answers(model, batch, output_hidden_states=True)
        logp = torch.log_softmax(logits, dim=-1)
        p = logp.exp()
        tlp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        mu = (p * logp).sum(-1)
        sigma = ((p * logp.pow(2)).sum(-1) - mu.pow(2)).clamp(min=1e-12).sqrt()
        top2 = p.topk(2, dim=-1).values
        argmax_ok = (logits.argmax(-1) == targets) | ~mask
        hs = res.hidden_states[hidden_layer]
        am = batch["attention_mask"].unsqueeze(-1).to(hs.dtype)
        pooled = ((hs * am).sum(1) / am.sum(1)).float().cpu().numpy()
        if hidden is None:
            hidden = np.zeros((n, pooled.shape[1]), dtype=np.float32)
        m = mask.float()
        cnt = m.sum(-1).clamp(min=1)
        for r, i in enumerate(idx):
            sel = mask[r]
            tok_lp[i] = tlp[r][sel].cpu().numpy().astype(np.float64)
            tok_z[i] = ((tlp[r] - mu[r]) / sigma[r])[sel].cpu().numpy().astype(np.float64)
            tok_ids[i] = targets[r][sel].cpu().numpy()
            if dists is not None:
                dists[i] = p[r][sel].cpu().numpy().astype(np.float32)
        idx_t = np.asarray(idx, dtype=np.int64)
        out["logprob_sum"][idx_t] = (tlp * m).sum(-1).double().cpu().numpy()
        out["max_prob"][idx_t] = ((top2[..., 0] * m).sum(-1) / cnt).double().cpu().numpy()
        out["neg_entropy"][idx_t] = ((mu * m).sum(-1) / cnt).double().cpu().numpy()
        out["margin"][idx_t] = (((top2[..., 0] - top2[..., 1]) * m).sum(-1) / cnt).double().cpu().numpy()
        n_tok[idx_t] = mask.sum(-1).cpu().numpy()
        exact[idx_t] = argmax_ok.all(-1).cpu().numpy()
        hidden[idx_t] = pooled
    model.train(was_training)
    return Scores(hidden=hidden if hidden is not None else np.zeros((0, 0), np.float32), n_tokens=n_tok,
                  exact=exact, token_logprobs=tok_lp, token_zpp=tok_z, token_ids=tok_ids, dist=dists, **out)


@torch.inference_mode()
def choose_options(model, processor, rows: Sequence[dict], images: Callable, batch_size: int = 64) -> np.ndarray:
    """Index of the most likely option (summed answer log-probability) per row; -1 without options."""
    flat_rows, flat_answers, owner = [], [], []
    for r, row in enumerate(rows):
        for opt in list(row["options"]) if row.get("options") is not None else []:
            flat_rows.append(row)
            flat_answers.append(opt)
            owner.append(r)
    choice = np.full(len(rows), -1, dtype=np.int64)
    if not flat_rows:
        return choice
    enc = encode(processor, flat_rows, images, answers=flat_answers)
    s = score(model, enc, processor.tokenizer.pad_token_id, batch_size)
    best: dict[int, tuple[float, int]] = {}
    counters: dict[int, int] = {}
    for k, r in enumerate(owner):
        j = counters.get(r, 0)
        counters[r] = j + 1
        if r not in best or s.logprob_sum[k] > best[r][0]:
            best[r] = (s.logprob_sum[k], j)
    for r, (_, j) in best.items():
        choice[r] = j
    return choice


@torch.inference_mode()
def generate(model, processor, enc: Encoded, batch_size: int = 64, max_new_tokens: int = 24) -> list[str]:
    """Batched greedy decoding of the prompts of `enc` (left padding); answers stripped."""
    tok = processor.tokenizer
    texts: list[str] = [""] * len(enc)
    order = _order(enc)
    was_training = model.training
    model.eval()
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        batch = collate(enc, idx, tok.pad_token_id, side="left", with_answer=False)
        gen = model.generate(**model_inputs(batch), max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        new = gen[:, batch["input_ids"].shape[1]:]
        for r, i in enumerate(idx):
            texts[i] = tok.decode(new[r], skip_special_tokens=True).strip()
    model.train(was_training)
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
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        texts.append(tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    model.train(was_training)
    return texts


_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize(text: str) -> str:
    return " ".join(_PUNCT.sub(" ", str(text).lower()).split())


def text_match(pred: str, gold: str) -> bool:
    """Normalized exact or containment match (generation and cloze forms)."""
    p, g = normalize(pred), normalize(gold)
    return bool(g) and (p == g or f" {g} " in f" {p} ")


@dataclass
class Evaluation:
    """Per-row results in input order plus the raw scores of the answer pass."""

    frame: pd.DataFrame
    scores: Scores


def evaluate(model, processor, rows: Sequence[dict], images: Callable, batch_size: int = 64,
             keep_dist: bool = False, hidden_layer: int = -2, with_generation: bool = False,
             enc: Encoded | None = None, progress: bool = False) -> Evaluation:
    """Accuracy per row: classification by option likelihood, other forms by teacher-forced exact
    match (or, with generation, normalized exact/containment match of the greedy answer)."""
    enc = enc if enc is not None else encode(processor, rows, images)
    s = score(model, enc, processor.tokenizer.pad_token_id, batch_size, keep_dist, hidden_layer, progress)
    choice = choose_options(model, processor, rows, images, batch_size)
    frame = pd.DataFrame({"qa_id": [r["qa_id"] for r in rows], "form": [r["form"] for r in rows],
                          "view": [r["view"] for r in rows]})
    correct = s.exact.copy()
    for i, row in enumerate(rows):
        if choice[i] >= 0:
            correct[i] = list(row["options"])[choice[i]] == row["answer"]
    if with_generation:
        texts = generate(model, processor, enc, batch_size)
        frame["generated"] = texts
        for i, row in enumerate(rows):
            if choice[i] < 0:
                correct[i] = text_match(texts[i], row["answer"])
    frame["correct"] = correct
    frame["chosen_option"] = choice
    frame["logprob_sum"] = s.logprob_sum
    frame["logprob_mean"] = s.logprob_mean
    frame["n_tokens"] = s.n_tokens
    frame["tf_exact"] = s.exact
    return Evaluation(frame, s)
