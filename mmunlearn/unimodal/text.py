"""Text-only unimodal branch: the private profiles' `text`-view questions asked to a language model
alone, unlearned with the section 6 methods and scored like the multimodal runs (finding 2 of
SPEC 8 compares metric agreement here and there).

Model: by default the language model of the base VLM (`models/base`): a causal LM of the VLM's
text config holding the VLM's own decoder and LM head (its logits equal the VLM's on text-only
input), prompted with the base processor's chat template, i.e. the strings the base was pretrained
on (`models.encode`). `unimodal.text.model` may name any local causal-LM checkpoint instead
(AutoModelForCausalLM + AutoTokenizer, offline), prompted with its tokenizer's chat template, or
`Question: ...\nAnswer:` where it has none.

Per seed (rows of a seed depend on that seed only):

- FINE-TUNED: LoRA (`finetune.add_lora`, `finetune.lr`) on the text rows of the forget + retain
  profiles; ORACLE of each setting: the same recipe on that setting's retain rows only.
- Settings (the row's `dataset`, sets from `methods.runner.variant_tasks`): `text_icu` = every
  forget-task profile, unlearned as ONE set (the row scores only the final model against the
  oracle of all tasks; task after task would cost n_tasks x steps and per-task masks, 100 tasks at
  full scale), `text_fiu` / `text_umu` = the static splits of `unlearn.fiu_ratio` / `umu_ratio`.
- Each method of `methods` unlearns a copy of the fine-tuned LoRA with its `unlearn.<method>`
  block through the method classes (`methods.get`, `Context`, `runner.Sampler`); every method of
  a setting draws the same forget / retain batches. MMUnlearner applies unchanged (its Fisher mask
  covers the trainable LoRA weights, no modality split). Methods the library refuses on a model
  without a vision part (`models.arch.UnsupportedModel`: MANU, whose neuron selection spans the
  vision and language MLPs) are skipped and reported in `skipped`.
- Row metrics on the setting's text rows, from `models.engine` passes: FA / RA (classification by
  option likelihood, generation and cloze by teacher-forced exact match), MIA (`mia_attack` member
  rate; forget rows = members vs as many holdout rows, a seeded balanced sample as in the CIFAR-10
  branch), AD (mean-pooled penultimate hidden states vs the oracle on forget rows), JS (answer
  next-token distributions vs the oracle, aligned by token id), retrained_distance
  (`metrics.evaluate.target_weights`, merged, vs the oracle).

Knobs per scale in `unimodal.text` (null = the main pipeline's value): `epochs`, `batch_size`,
`max_steps`, `eval_retain`. The smoke preset (2 epochs, batches of 8, 1 step, 16 retain rows for
RA) keeps the branch at ~11 s of one core, a plumbing run; small / full follow `finetune` and
`unlearn` exactly. Training is a plain AdamW loop over length-sorted batches, the HF Trainer's
recipe (AdamW beta2 0.98, linear decay, gradient clipping at 1) without its overhead, which
doubled the cost of each of the four trainings per seed at this size.
"""
from __future__ import annotations

import copy
import math
import numbers
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from mmunlearn.errors import UserError
from mmunlearn.params import ParamError, _per_scale, runtime

KEY = "unimodal.text"
VARIANTS = ("icu", "fiu", "umu")
SETTINGS = tuple(f"text_{v}" for v in VARIANTS)
DEFAULT_CFG: dict = {
    "model": "",                                           # causal-LM checkpoint dir; "" = the base VLM's LM
    "epochs": {"smoke": 2, "small": None, "full": None},       # LoRA epochs; null = finetune.epochs
    "batch_size": {"smoke": 8, "small": None, "full": None},   # null = finetune / unlearn.batch_size
    "max_steps": {"smoke": 1, "small": None, "full": None},    # cap on unlearn.<method>.steps; null = none
    "eval_retain": {"smoke": 16, "small": None, "full": None},  # retain rows scored for RA; null = all
    "threads": 1,                                          # torch CPU threads while the branch runs
    "workers": 0,                                          # settings side by side; 0 = one per setting
}
FALLBACK_PROMPT = "Question: {question}\nAnswer:"


# ---- model and prompts ---------------------------------------------------------------------------

class TextPrompts:
    """The processor interface `mmunlearn.models.encode` uses (`tokenizer`, `chat_template`,
    `apply_chat_template`) over a plain tokenizer: its chat template, with the message contents as
    strings or, where the template reads them as lists of parts (multimodal style), as they come;
    `FALLBACK_PROMPT` without a template."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        # `encode.prompt` renders through this object when it has a template
        self.chat_template = getattr(tokenizer, "chat_template", None) or FALLBACK_PROMPT
        self._parts: bool | None = None   # whether the template wants list contents (learnt once)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True,
                            tokenize: bool = False) -> str:
        texts = ["".join(c["text"] for c in m["content"] if c["type"] == "text") for m in messages]
        if not getattr(self.tokenizer, "chat_template", None):
            return "".join(FALLBACK_PROMPT.format(question=t) for m, t in zip(messages, texts) if m["role"] == "user")
        flat = [{"role": m["role"], "content": t} for m, t in zip(messages, texts)]
        forms = [messages] if self._parts else [flat] if self._parts is False else [flat, messages]
        for form in forms:
            try:
                out = self.tokenizer.apply_chat_template(form, add_generation_prompt=add_generation_prompt,
                                                         tokenize=False)
            except Exception:  # noqa: BLE001 - a template that cannot read this content form
                continue
            if all(t in out for t in texts):
                self._parts = form is messages
                return out
        raise UserError(f"{KEY}.model: the tokenizer's chat template drops the question text "
                        f"(with string and with list contents)")


def language_model(vlm):
    """The causal LM inside a VLM. Where the VLM keeps a bare decoder (LLaVA, transformers 5:
    `model.language_model.*` + `lm_head.weight`), a `*ForCausalLM` shell of its text config takes
    over that decoder and LM head (named `model.*` + `lm_head.weight` there); where it keeps a
    whole causal LM (BLIP-2's `language_model`), that model itself."""
    from transformers import AutoModelForCausalLM

    decoder, head = vlm.get_decoder(), vlm.get_output_embeddings()
    if decoder is None or head is None:
        raise UserError(f"{type(vlm).__name__}: no language model decoder / LM head to take over")
    if callable(getattr(decoder, "get_output_embeddings", None)) and decoder.get_output_embeddings() is not None:
        lm = decoder
    else:
        with torch.device("meta"):  # no weights initialised: both parameterised children are replaced
            lm = AutoModelForCausalLM.from_config(vlm.config.get_text_config())
        setattr(lm, lm.base_model_prefix, decoder)  # `set_decoder` of a *ForCausalLM is a no-op in 5.23
        lm.set_output_embeddings(head)
    left = [n for n, t in [*lm.named_parameters(), *lm.named_buffers()] if t.device.type == "meta"]
    if left:
        raise UserError(f"{type(vlm).__name__}: the causal LM of its text config has weights the VLM "
                        f"does not provide ({', '.join(left[:3])})")
    lm.config.use_cache = False
    return lm.eval()


def load_model(model: str, base_dir: str | Path):
    """(causal LM, processor-like prompter): `model` a local checkpoint directory (offline), or ""
    for the language model of the VLM in `base_dir` and its processor."""
    from mmunlearn.models.vlm import base_source, load_vlm, resolve_checkpoint

    if not model:
        vlm, processor = load_vlm(base_source(base_dir))
        return language_model(vlm), processor
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_checkpoint(model)
    try:
        tok = AutoTokenizer.from_pretrained(path)
        lm = AutoModelForCausalLM.from_pretrained(path)
    except (OSError, ValueError, KeyError) as err:
        why = " ".join(str(err).split())[:200]
        raise UserError(f"{KEY}.model={model!r}: not a causal LM checkpoint ({why})") from None
    if tok.eos_token_id is None:
        raise UserError(f"{KEY}.model={model!r}: its tokenizer has no EOS token (answers end with it)")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    lm.config.use_cache = False
    return lm.eval(), TextPrompts(tok)


# ---- data ----------------------------------------------------------------------------------------

@dataclass
class RowSet:
    """Text rows and their encoding (prompt + answer + EOS)."""

    rows: list[dict]
    enc: Any

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, idx: Sequence[int]) -> "RowSet":
        return RowSet([self.rows[i] for i in idx], self.enc.take(idx))

    @staticmethod
    def concat(parts: Sequence["RowSet"]) -> "RowSet":
        from mmunlearn.models.encode import Encoded

        return RowSet([r for p in parts for r in p.rows],
                      Encoded(input_ids=[x for p in parts for x in p.enc.input_ids],
                              prompt_len=[x for p in parts for x in p.enc.prompt_len],
                              image=[x for p in parts for x in p.enc.image]))

    @property
    def choice_idx(self) -> list[int]:
        """Rows answered by choosing an option (classification); the others by exact match."""
        return [i for i, r in enumerate(self.rows) if r.get("options") is not None and len(r["options"])]


@dataclass
class Setting:
    """One forget setting of one seed: what is unlearned and what every model is scored on."""

    name: str
    forget: RowSet              # unlearned; scored for FA, AD, JS, MIA (members)
    retain: RowSet              # oracle training and retain batches
    retain_eval: RowSet         # RA (all retain rows, or a seeded `eval_retain` subsample)
    members: np.ndarray         # indices into `forget`: MIA members, as many as...
    nonmembers: RowSet          # ...holdout rows (seeded sample of equal size)


def _no_images(name: str):
    raise UserError(f"text branch: row asks for image {name!r}; only `text`-view rows are used")


def _sample(n: int, k: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a seeded sample of min(k, n) of n items (all of them when k is None)."""
    if k is None or k >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, k, replace=False))


class TextData:
    """The text view of the assembled dataset, encoded once per row set."""

    def __init__(self, qa: pd.DataFrame, profiles: pd.DataFrame, processor, params: dict):
        from mmunlearn.data.qa import option_pools

        self.text = qa[qa.view == "text"]
        if self.text.empty:
            raise UserError("text branch: data/qa.parquet has no `text`-view rows")
        self.profiles, self.processor, self.params = profiles, processor, params
        self.pools = option_pools(profiles)
        self.pad = processor.tokenizer.pad_token_id
        self._cache: dict[tuple, RowSet] = {}

    def rows(self, profile_ids) -> RowSet:
        from mmunlearn.models.encode import encode

        rows = self.text[self.text.profile_id.isin(set(profile_ids))].to_dict("records")
        key = tuple(r["qa_id"] for r in rows)
        if key not in self._cache:
            self._cache[key] = RowSet(rows, encode(self.processor, rows, _no_images))
        return self._cache[key]

    def split(self, *names: str) -> RowSet:
        return self.rows(self.profiles.profile_id[self.profiles.split.isin(names)])

    def setting(self, variant: str, seed: int, eval_retain: int | None) -> Setting:
        from mmunlearn.methods.runner import variant_tasks

        s_i = VARIANTS.index(variant)
        tasks, retain_ids = variant_tasks(variant, self.params, self.profiles)
        forget = self.rows([p for _, ids in tasks for p in ids])
        retain = self.rows(retain_ids)
        holdout = self.split("holdout")
        if len(forget) < 2 or len(retain) < 2 or len(holdout) < 2:
            raise UserError(f"text branch {variant}: {len(forget)} forget / {len(retain)} retain / "
                            f"{len(holdout)} holdout text rows; need at least 2 of each")
        rng = np.random.default_rng([seed, 0x7B, s_i])
        m = min(len(forget), len(holdout))
        return Setting(f"text_{variant}", forget, retain, retain.subset(_sample(len(retain), eval_retain, rng)),
                       _sample(len(forget), m, rng), holdout.subset(_sample(len(holdout), m, rng)))


# ---- training -------------------------------------------------------------------------------------

def length_batches(enc, batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """One epoch of batches of similar length (sorted by length, random among equal lengths), in
    random order: little padding, compositions that change between epochs."""
    tie = rng.permutation(len(enc))
    order = sorted(range(len(enc)), key=lambda i: (len(enc.input_ids[i]), int(tie[i])))
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    return [batches[j] for j in rng.permutation(len(batches))]


def train_lora(lm, data: RowSet, pad_id: int, params: dict, epochs: float, batch_size: int,
               seed: int, tag: int):
    """A LoRA copy of `lm` (`finetune.add_lora`) trained on `data` with the finetune recipe as the
    HF Trainer runs it: AdamW at `finetune.lr`, beta2 0.98, linear decay to 0, gradient norm
    clipped at 1; `tag` separates the batch orders of the trainings of one seed."""
    from mmunlearn.models import onednn
    from mmunlearn.models.encode import collate
    from mmunlearn.models.finetune import add_lora
    from mmunlearn.models.scoring import answer_nll

    model = add_lora(copy.deepcopy(lm), {**params, "seed": seed})
    model.train()
    weights = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(weights, lr=float(params["finetune"]["lr"]), betas=(0.9, 0.98), weight_decay=0.0)
    total = max(1, math.ceil(epochs * math.ceil(len(data) / batch_size)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / total)
    rng = np.random.default_rng([seed, 0x7E, tag])
    step = 0
    with onednn.accelerated(model):
        while step < total:
            for idx in length_batches(data.enc, batch_size, rng):
                loss = answer_nll(model, collate(data.enc, idx, pad_id))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(weights, 1.0)
                opt.step()
                sched.step()
                step += 1
                if step == total:
                    break
    return model.eval()


def merged(model, pruned: dict | None = None):
    """An inference copy: LoRA merged into the weights, pruned neurons (MANU) zeroed."""
    from mmunlearn.methods.manu import apply_pruning

    out = copy.deepcopy(model).merge_and_unload().eval()
    if pruned:
        apply_pruning(out, pruned)
    for p in out.parameters():
        p.requires_grad_(False)
    return out


class EvalSlot:
    """One inference model that takes the merged weights of every model scored: the engine's
    once-per-model-object checks (fast path, packed options) run once per seed, not per model, and
    merging needs no copy of the model."""

    def __init__(self, template):
        self.model = merged(template)
        self.owned = dict(self.model.named_parameters())
        self.dirty = False   # pruned weights outside the adapters since the last full load

    @torch.no_grad()
    def load(self, model, pruned: dict | None = None):
        """The slot holding `model` (a LoRA model on the same base) merged: W + delta per adapted
        weight, as peft's merge computes it; pruned neurons zeroed."""
        from peft.tuners.lora import LoraLayer

        if pruned:
            self.model.load_state_dict(merged(model, pruned).state_dict())
            self.dirty = True
            return self.model
        if self.dirty:
            self.model.load_state_dict(merged(model).state_dict())
            self.dirty = False
            return self.model
        for name, mod in model.named_modules():
            if isinstance(mod, LoraLayer):
                base = mod.get_base_layer().weight
                delta = sum(mod.get_delta_weight(a) for a in mod.active_adapters)
                self.owned[name.removeprefix("base_model.model.") + ".weight"].copy_(base + delta)
        return self.model


# ---- unlearning -----------------------------------------------------------------------------------

class LocalAccelerator:
    """The two `Accelerator` calls methods make (`backward`, `prepare`), for one CPU process."""

    @staticmethod
    def backward(loss: torch.Tensor) -> None:
        loss.backward()

    @staticmethod
    def prepare(*objs):
        return objs[0] if len(objs) == 1 else objs


def unlearn(method_name: str, ft, ref, data: TextData, setting: Setting, params: dict, sv: dict,
            seed: int, s_i: int) -> tuple[Any, dict]:
    """(unlearned LoRA model, method state) after `method_name` on the setting's forget rows as one
    task (`unlearn.<method>.steps` steps capped by `sv["max_steps"]`, batches of
    `sv["unlearn_batch"]`), from a copy of the fine-tuned LoRA model `ft`; `ref` = the frozen
    fine-tuned model. Batches come from seeded samplers that every method of a setting (`s_i`)
    shares; only the methods' own draws (random answers) differ."""
    from mmunlearn.methods import get
    from mmunlearn.methods.base import Context, trainable
    from mmunlearn.methods.runner import Sampler
    from mmunlearn.models.encode import retarget

    mcfg = params["unlearn"][method_name]
    method = get(method_name)(mcfg)
    torch.manual_seed(seed)
    model = copy.deepcopy(ft)
    model.train()
    optimizer = torch.optim.AdamW(list(trainable(model).values()), lr=float(mcfg.get("lr", 0.0)) or 1e-3,
                                  weight_decay=0.0)
    bs = sv["unlearn_batch"]
    steps = int(mcfg.get("steps", 0))
    steps = min(steps, sv["max_steps"]) if sv["max_steps"] is not None else steps
    task = setting.forget
    retain = Sampler(setting.retain.enc, data.pad, bs, np.random.default_rng([seed, 0x7F, s_i, 0]))
    batch_rng = np.random.default_rng([seed, 0x7F, s_i, 1])
    answers = method.forget_answers(task.rows, data.pools,
                                    np.random.default_rng([seed, 0x7F, s_i, zlib.crc32(method_name.encode())]))
    target = task.enc if answers is None else retarget(task.enc, data.processor.tokenizer, answers)
    state: dict = {"true_forget_batch": Sampler(task.enc, data.pad, bs, np.random.default_rng([seed, 0x7F, s_i, 2]))()}
    ctx = Context(model=model, ref=ref, optimizer=optimizer, accelerator=LocalAccelerator(), rng=batch_rng,
                  forget_batches=Sampler(target, data.pad, bs, batch_rng), retain_batches=retain,
                  forget_rows=task.rows, retain_rows=setting.retain.rows, state=state)
    method.unlearn_task(ctx, steps)
    for h in state.pop("hooks", []):
        h.remove()
    return model.eval(), state


# ---- evaluation -----------------------------------------------------------------------------------

def mia_features(scores) -> np.ndarray:
    """[n, 3]: the paper's attack features (max p, -entropy, top1-top2 margin over answer tokens)."""
    return np.stack([scores.max_prob, scores.neg_entropy, scores.margin], axis=1)


def _value(name: str, v: Any) -> float:
    if v is None or not np.isfinite(v):
        raise UserError(f"text branch: metric {name} is undefined ({v!r}): too few rows or a diverged model")
    return float(v)


class Scorer:
    """The passes of `mmunlearn.models.engine` that one row needs, for an inference model (merged,
    pruned): forget rows in full (answer distributions, hidden states, MIA features) plus their
    options, retain rows for accuracy only, the MIA non-members for their features only."""

    def __init__(self, data: TextData, params: dict, seed: int):
        self.data, self.seed = data, seed
        self.bs = int(params["metrics"]["batch_size"])
        self.folds = int(params["metrics"]["mia_folds"])
        self.targets = list(params["finetune"]["lora"]["target_modules"])
        self._joint: dict[str, RowSet] = {}

    def score(self, model, rs: RowSet, full: bool = False):
        from mmunlearn.models.engine import score

        return score(model, rs.enc, self.data.pad, self.bs, keep_dist=full, hidden_layer=-2 if full else None)

    def correct(self, model, rs: RowSet, scores=None) -> np.ndarray:
        """Per row: classification by option likelihood (`engine.choose_options`), generation and
        cloze by teacher-forced exact match (`scores` of `rs` when already computed)."""
        from mmunlearn.models.engine import choose_options

        choice = rs.choice_idx
        plain = sorted(set(range(len(rs))) - set(choice))
        out = np.zeros(len(rs), dtype=bool)
        if plain:
            out[plain] = (scores.exact[plain] if scores is not None else
                          self.score(model, rs.subset(plain)).exact)
        if choice:
            rows = [rs.rows[i] for i in choice]
            picked = choose_options(model, self.data.processor, rows, _no_images, self.bs)
            out[choice] = [list(r["options"])[c] == r["answer"] for r, c in zip(rows, picked)]
        return out

    def oracle(self, model, setting: Setting) -> dict:
        """What every row of a setting compares with: the oracle's forget pass and target weights."""
        from mmunlearn.metrics.evaluate import target_weights

        return {"forget": self.score(model, setting.forget, full=True),
                "weights": {n: w.clone() for n, w in target_weights(model, self.targets).items()}}

    def row(self, model, setting: Setting, oracle: dict) -> dict:
        """FA, RA, MIA, AD, JS, retrained_distance of `model` on `setting`: one teacher-forced pass
        over the forget rows, the MIA non-members and the retain rows not answered by choice, one
        option pass over the classification rows of forget and retain."""
        from mmunlearn.metrics import (accuracy, activation_distance, js_divergence, mia_attack,
                                       oracle_distance)
        from mmunlearn.metrics.evaluate import target_weights
        from mmunlearn.models.engine import choose_options

        f, n, r = setting.forget, setting.nonmembers, setting.retain_eval
        f_choice, r_choice = f.choice_idx, r.choice_idx
        r_plain = [i for i in range(len(r)) if i not in set(r_choice)]
        if setting.name not in self._joint:
            self._joint[setting.name] = RowSet.concat([f, n, r.subset(r_plain)])
        s = self.score(model, self._joint[setting.name], full=True)
        nf, nn = len(f), len(n)
        feats = mia_features(s)
        rows = [f.rows[i] for i in f_choice] + [r.rows[i] for i in r_choice]
        picked = choose_options(model, self.data.processor, rows, _no_images, self.bs) if rows else []
        chosen = np.array([list(row["options"])[c] == row["answer"] for row, c in zip(rows, picked)], dtype=bool)
        f_ok, r_ok = s.exact[:nf].copy(), np.zeros(len(r), dtype=bool)
        f_ok[f_choice] = chosen[:len(f_choice)]
        r_ok[r_plain] = s.exact[nf + nn:]
        r_ok[r_choice] = chosen[len(f_choice):]
        mia = mia_attack(feats[:nf][setting.members], feats[nf:nf + nn], folds=self.folds, seed=self.seed)
        o = oracle["forget"]
        return {
            "FA": _value("FA", accuracy(f_ok)),
            "RA": _value("RA", accuracy(r_ok)),
            "MIA": _value("MIA", mia["member_rate"]),
            "AD": _value("AD", activation_distance(s.hidden[:nf], o.hidden)),
            "JS": _value("JS", js_divergence(s.dist[:nf], o.dist)),
            "retrained_distance": _value("retrained_distance", oracle_distance(
                target_weights(model, self.targets), oracle["weights"])),
        }


# ---- the branch -----------------------------------------------------------------------------------

def scale_values(params: dict, cfg: dict) -> dict:
    """The branch's knobs at `params["scale"]`; null = the main pipeline's value (epochs:
    `finetune.epochs`; batch: `finetune.batch_size` for training, `unlearn.batch_size` for
    unlearning) or no cap (max_steps, eval_retain)."""
    def at(v):
        return v[params["scale"]] if isinstance(v, dict) else v

    epochs, batch = at(cfg["epochs"]), at(cfg["batch_size"])
    return {"epochs": float(at(params["finetune"]["epochs"]) if epochs is None else epochs),
            "train_batch": int(params["finetune"]["batch_size"] if batch is None else batch),
            "unlearn_batch": int(params["unlearn"]["batch_size"] if batch is None else batch),
            "max_steps": at(cfg["max_steps"]), "eval_retain": at(cfg["eval_retain"])}


def run_seed(lm, data: TextData, params: dict, cfg: dict, seed: int, progress: Any = None,
             baselines: bool = False) -> dict:
    """One seed: {"rows": one per setting x method, "memorisation": accuracy of the fine-tuned LM on
    its trained and on holdout text rows, "skipped": {method: why} for methods the library refuses
    on a language model alone (`arch.UnsupportedModel`: MANU, whose neuron selection needs a vision
    part), "seconds": CPU seconds per phase}; with `baselines`, also "baselines": the fine-tuned LM
    and each oracle scored like the rows (method "finetuned" / "oracle")."""
    from mmunlearn.unimodal.cifar import torch_threads

    with torch_threads(cfg["threads"]):
        return _run_seed(lm, data, params, cfg, seed, progress, baselines)


def _run_seed(lm, data: TextData, params: dict, cfg: dict, seed: int, progress: Any, baselines: bool) -> dict:
    from mmunlearn.metrics import accuracy
    from mmunlearn.parallel import run_jobs

    sv = scale_values(params, cfg)
    t0 = time.process_time()

    def tick(what: str, n: int = 1) -> None:
        if progress is not None:
            progress.set_postfix_str(f"seed {seed} {what}", refresh=False)
            progress.update(n)

    trained, holdout = data.split("forget", "retain"), data.split("holdout")
    ft = train_lora(lm, trained, data.pad, params, sv["epochs"], sv["train_batch"], seed, tag=0)
    ref = merged(ft)   # the frozen fine-tuned model of KL / NPO
    t = time.process_time()
    seconds = {"finetune": t - t0, "oracles": 0.0, "unlearn": 0.0, "evaluate": 0.0}
    scorer, slot = Scorer(data, params, seed), EvalSlot(ft)
    memo = {"trained_acc": accuracy(scorer.correct(slot.load(ft), trained)),
            "holdout_acc": accuracy(scorer.correct(slot.model, holdout))}
    seconds["evaluate"] += time.process_time() - t
    tick("fine-tuned")
    out = {"rows": [], "memorisation": memo, "skipped": {}}
    if baselines:
        out["baselines"] = []
    shared = {"lm": lm, "data": data, "ft": ft, "ref": ref, "params": params, "sv": sv, "seed": seed,
              "baselines": baselines}
    # the settings side by side (`runtime.unimodal.text.workers`); each job seeds its own draws
    for res in run_jobs(_setting_job, list(enumerate(VARIANTS)), int(cfg["workers"]), per_job=True, shared=shared):
        out["rows"] += res["rows"]
        out["skipped"].update(res["skipped"])
        if baselines:
            out["baselines"] += res["baselines"]
        for k, v in res["seconds"].items():
            seconds[k] += v
        tick(f"{res['setting']} done", 1 + len(params["methods"]))
    seconds["total"] = sum(seconds.values())
    out["seconds"] = seconds
    return out


def _setting_job(shared: dict, job: tuple[int, str]) -> dict:
    """One setting of one seed: its oracle, then every method unlearned and scored against it."""
    from mmunlearn.models.arch import UnsupportedModel

    s_i, variant = job
    lm, data, ft, ref, params, sv, seed = (shared[k] for k in ("lm", "data", "ft", "ref", "params", "sv", "seed"))
    seconds = {"oracles": 0.0, "unlearn": 0.0, "evaluate": 0.0}

    def lap(phase: str, since: float) -> float:
        now = time.process_time()
        seconds[phase] += now - since
        return now

    t = time.process_time()
    setting = data.setting(variant, seed, sv["eval_retain"])
    oracle_lora = train_lora(lm, setting.retain, data.pad, params, sv["epochs"], sv["train_batch"], seed, tag=1 + s_i)
    t = lap("oracles", t)
    scorer, slot = Scorer(data, params, seed), EvalSlot(ft)
    oracle = scorer.oracle(slot.load(oracle_lora), setting)
    key = {"dataset": setting.name, "seed": int(seed)}
    res: dict = {"setting": setting.name, "rows": [], "skipped": {}, "seconds": seconds}
    if shared["baselines"]:
        res["baselines"] = [{**key, "method": "oracle", **scorer.row(slot.model, setting, oracle)},
                            {**key, "method": "finetuned", **scorer.row(slot.load(ft), setting, oracle)}]
    t = lap("evaluate", t)
    for method in params["methods"]:
        try:
            model, state = unlearn(method, ft, ref, data, setting, params, sv, seed, s_i)
        except UnsupportedModel as err:  # refused before any step (MANU: no vision part)
            res["skipped"][method] = str(err)
            continue
        t = lap("unlearn", t)
        res["rows"].append({**key, "method": method, **scorer.row(slot.load(model, state.get("pruned")), setting, oracle)})
        t = lap("evaluate", t)
    return res


def run_branch(params: dict, base_dir: str | Path = "models/base", data_dir: str | Path = "data",
               progress: bool = False, baselines: bool = False) -> dict:
    """Every setting x method x seed of the text branch: {"rows": rows of the released results
    format ({"dataset": "text_icu" | "text_fiu" | "text_umu", "method", "seed", "FA", "RA", "MIA",
    "AD", "JS", "retrained_distance"}, plain floats), "seeds": {seed: run_seed's other outputs}}.
    The `unimodal.text` block (absent = DEFAULT_CFG) is validated first. Same params -> identical
    rows."""
    cfg = text_cfg(params)
    data_dir = Path(data_dir)
    for name in ("qa.parquet", "profiles.parquet"):
        if not (data_dir / name).is_file():
            raise UserError(f"text branch: {data_dir / name} not found (run the `assemble` stage first)")
    lm, processor = load_model(cfg["model"], base_dir)
    data = TextData(pd.read_parquet(data_dir / "qa.parquet"), pd.read_parquet(data_dir / "profiles.parquet"),
                    processor, params)
    from tqdm.auto import tqdm

    seeds = [int(s) for s in params["seeds"]]
    rows, per_seed = [], {}
    total = len(seeds) * (1 + len(VARIANTS) * (1 + len(params["methods"])))
    with tqdm(total=total, desc="text", disable=not progress) as bar:
        for seed in seeds:
            out = run_seed(lm, data, params, cfg, seed, progress=bar, baselines=baselines)
            rows.extend(out.pop("rows"))
            per_seed[seed] = out
    return {"rows": rows, "seeds": per_seed}


# ---- params ---------------------------------------------------------------------------------------

def text_cfg(params: dict) -> dict:
    """The validated `unimodal.text` block (DEFAULT_CFG where params have none)."""
    block = (params.get("unimodal") or {}).get("text")
    cfg = copy.deepcopy(DEFAULT_CFG) if block is None else block
    cfg = {**cfg, "workers": runtime(params, "unimodal.text.workers")}   # params.yaml: runtime section
    validate_cfg(cfg, params)
    return cfg


def _positive(key: str, v: Any, allow_none: bool = False) -> None:
    if v is None and allow_none:
        return
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (np.isfinite(v) and v > 0):
        raise ParamError(key, v, "must be a positive number" + (" or null" if allow_none else ""))


def _count(key: str, v: Any, lo: int = 1, allow_none: bool = False) -> None:
    if v is None and allow_none:
        return
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
        raise ParamError(key, v, f"must be an integer >= {lo}" + (" or null" if allow_none else ""))


def validate_cfg(cfg: Any, params: dict | None = None, key: str = KEY) -> None:
    """Raise ParamError(key, value, why) for any value the branch cannot run with."""
    from mmunlearn.unimodal.cifar import _keys

    _keys(key, cfg, tuple(DEFAULT_CFG))
    model = cfg["model"]
    if not isinstance(model, str):
        raise ParamError(f"{key}.model", model, "must be a checkpoint directory path ('' = the base VLM's LM)")
    if model and not (Path(model).expanduser() / "config.json").is_file():
        raise ParamError(f"{key}.model", model, "not a local checkpoint directory (no config.json)")
    _per_scale(f"{key}.epochs", cfg["epochs"], lambda k, v: _positive(k, v, allow_none=True))
    _per_scale(f"{key}.batch_size", cfg["batch_size"], lambda k, v: _count(k, v, allow_none=True))
    _per_scale(f"{key}.max_steps", cfg["max_steps"], lambda k, v: _count(k, v, allow_none=True))
    _per_scale(f"{key}.eval_retain", cfg["eval_retain"], lambda k, v: _count(k, v, lo=2, allow_none=True))
    _count(f"{key}.threads", cfg["threads"])
    _count(f"{key}.workers", cfg["workers"], lo=0)
    if params is not None:
        methods = params.get("methods")
        if not isinstance(methods, list) or len(set(methods)) < 2:
            raise ParamError("methods", methods, "the text branch needs at least 2 methods to compare")
