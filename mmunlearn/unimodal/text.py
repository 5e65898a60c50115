"""Text-only unimodal branch: the private profiles' `text`-view questions asked to a language model
alone, fine-tuned, unlearned and scored by the main pipeline's own code, so that finding 2 of SPEC 8
(metric agreement here vs in the multimodal runs) compares metrics defined alike.

Model: by default the language model of the base VLM (`models/base`): a causal LM of the VLM's
text config holding the VLM's own decoder and LM head (its logits equal the VLM's on text-only
input), prompted with the base processor's chat template, i.e. the strings the base was pretrained
on (`models.encode`). `unimodal.text.model` may name any local causal-LM checkpoint instead
(AutoModelForCausalLM + AutoTokenizer, offline), prompted with its tokenizer's chat template, or
`Question: ...\nAnswer:` where it has none.

Per seed (rows of a seed depend on that seed only):

- FINE-TUNED: LoRA (`finetune.add_lora`) trained by `models.train.train`, the HF Trainer recipe of
  stage `finetune` (`finetune.lr`), on the text rows of the forget + retain profiles; ORACLE of
  each setting: the same on that setting's retain rows only.
- Settings (the row's `dataset`, sets from `methods.runner.variant_tasks`): `text_icu` = every
  forget-task profile, unlearned as ONE task (the row scores only the final model against the
  oracle of all tasks; task after task would cost n_tasks x steps, 100 tasks at full scale),
  `text_fiu` / `text_umu` = the static splits of `unlearn.fiu_ratio` / `umu_ratio`.
- Each method of `methods` unlearns a copy of the fine-tuned LoRA model through the runner's
  per-task step (`methods.runner.Unlearner`: `unlearn.<method>`, accelerate's Accelerator, the
  frozen fine-tuned model as reference, draws seeded per method and setting as stage `unlearn`
  seeds them per method and variant). Methods the library refuses on a model without a vision
  part (`models.arch.UnsupportedModel`: MANU) are skipped and reported in `skipped`.
- Row metrics from the main evaluator's passes (`models.engine.evaluate`) on an inference copy
  (LoRA merged by peft's `merge_and_unload`, pruned neurons zeroed): FA / RA by the one row
  definition (`metrics.rows.row_correct`: classification by option likelihood, generation and
  cloze by normalized exact or containment match of the greedy answer), MIA by the main
  evaluator's `metrics.evaluate.mia_metrics` (the class-balanced `mia_attack` on every forget row
  vs every holdout row), AD, JS and retrained_distance vs the oracle (`headline`, `Scorer.row`).

Knobs per scale in `unimodal.text` (null = the main pipeline's value): `epochs`, `batch_size`,
`max_steps`, `eval_retain`. The smoke preset keeps the branch a cheap plumbing run; small / full
follow `finetune` and `unlearn` exactly.
"""
from __future__ import annotations

import copy
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from mmunlearn.data.splits import VARIANTS
from mmunlearn.errors import UserError
from mmunlearn.params import ParamError, by_scale, integer, keys, per_scale, positive, runtime

KEY = "unimodal.text"
SETTINGS = tuple(f"text_{v}" for v in VARIANTS)
DEFAULT_CFG: dict = {
    "model": "",                                           # causal-LM checkpoint dir; "" = the base VLM's LM
    "epochs": {"smoke": 2, "small": None, "full": None},       # LoRA epochs; null = finetune.epochs
    "batch_size": {"smoke": 8, "small": None, "full": None},   # null = finetune / unlearn.batch_size
    "max_steps": {"smoke": 1, "small": None, "full": None},    # cap on unlearn.<method>.steps; null = none
    "eval_retain": {"smoke": 16, "small": None, "full": None},  # retain rows scored for RA; null = metrics.eval_retain_rows
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
    from mmunlearn.models.vlm import load_base, resolve_checkpoint

    if not model:
        vlm, processor = load_base(base_dir)
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


@dataclass
class Setting:
    """One forget setting of one seed: what is unlearned and what every model is scored on."""

    name: str
    forget: RowSet              # unlearned; scored for FA, AD, JS; the MIA members
    retain: RowSet              # oracle training and retain batches
    retain_eval: RowSet         # RA (all retain rows, or a seeded `eval_retain` subsample)
    holdout: RowSet             # the MIA non-members: every holdout row


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

        tasks, retain_ids = variant_tasks(variant, self.params, self.profiles)
        forget = self.rows([p for _, ids in tasks for p in ids])
        retain = self.rows(retain_ids)
        holdout = self.split("holdout")
        if len(forget) < 2 or len(retain) < 2 or len(holdout) < 2:
            raise UserError(f"text branch {variant}: {len(forget)} forget / {len(retain)} retain / "
                            f"{len(holdout)} holdout text rows; need at least 2 of each")
        rng = np.random.default_rng([seed, 0x7B, VARIANTS.index(variant)])
        return Setting(f"text_{variant}", forget, retain, retain.subset(_sample(len(retain), eval_retain, rng)), holdout)


# ---- training and unlearning: the main pipeline's code -------------------------------------------

def train_lora(lm, data: RowSet, pad_id: int, params: dict, epochs: float, batch_size: int, seed: int):
    """A LoRA copy of `lm` (`finetune.add_lora`) trained on `data` by `models.train.train`, the HF
    Trainer recipe of stages `finetune` / `oracle` (`finetune.lr`, AdamW beta2 0.98, linear decay,
    length-grouped batches), with the branch's epochs and batch size and this seed."""
    from mmunlearn.models.finetune import add_lora, learning_rate
    from mmunlearn.models.train import TrainConfig, train

    model = add_lora(copy.deepcopy(lm), {**params, "seed": seed})
    train(model, data.enc, pad_id, TrainConfig(epochs=float(epochs), lr=learning_rate(params),
                                                batch_size=int(batch_size), seed=int(seed)), progress=False)
    return model.eval()


def merged(model, pruned: dict | None = None):
    """An inference copy of a LoRA model: the adapters merged by peft (`merge_and_unload` of a
    copy; `model` is untouched), pruned neurons (MANU) zeroed, no gradients."""
    from mmunlearn.models.vlm import apply_pruning

    out = copy.deepcopy(model).merge_and_unload().eval()
    if pruned:
        apply_pruning(out, pruned)
    for p in out.parameters():
        p.requires_grad_(False)
    return out


def unlearn(method_name: str, ft, data: TextData, setting: Setting, params: dict, sv: dict,
            seed: int) -> tuple[Any, dict]:
    """(unlearned LoRA model, method state): `method_name` on a copy of the fine-tuned LoRA model
    `ft` through the runner's per-task step (`runner.Unlearner`, as stage `unlearn` runs it), the
    setting's forget rows as one task: `unlearn.<method>` (`Method.configure`) with its steps
    capped by `sv["max_steps"]`, batches of `sv["unlearn_batch"]`, draws seeded by (seed, method,
    setting) as the runner seeds (seed, method, variant)."""
    from mmunlearn.methods import get
    from mmunlearn.methods.runner import Unlearner
    method = get(method_name).configure(params)
    steps = getattr(method.hp, "steps", 0)
    if sv["max_steps"] is not None:
        steps = min(steps, int(sv["max_steps"]))
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, zlib.crc32(f"{method_name}/{setting.name}".encode())])
    run = Unlearner.start(method, copy.deepcopy(ft).train(), data.processor.tokenizer, data.pools,
                          setting.retain.enc, setting.retain.rows, sv["unlearn_batch"], rng)
    try:
        run.task(setting.forget.rows, setting.forget.enc, steps)
    finally:
        state = run.finish()
    return run.accelerator.unwrap_model(run.model).eval(), state


# ---- evaluation: the main evaluator's passes and metric functions ---------------------------------

def row_inputs(forget, retain, holdout, forget_rows: Sequence[dict], holdout_rows: Sequence[dict],
               metrics_cfg: dict, seed: int) -> dict:
    """The inputs of the row metrics (`metrics.columns`) from one model's passes, as the main
    evaluator (`metrics.evaluate.evaluate_model`) makes them: the forget / retain `Pass`es of
    `models.engine.evaluate`, the holdout `Scores` and `mia_metrics` on forget vs holdout."""
    from mmunlearn.metrics.evaluate import mia_metrics

    mia = mia_metrics(forget.scores, holdout, [str(r["answer"]) for r in forget_rows],
                      [str(r["answer"]) for r in holdout_rows], metrics_cfg, seed)
    return {"forget": forget, "retain": retain, "holdout": holdout, "mia": mia}


def headline(forget, retain, holdout, forget_rows: Sequence[dict], holdout_rows: Sequence[dict],
             metrics_cfg: dict, seed: int) -> dict:
    """FA, RA and MIA from one model's passes, by the row metrics of every branch
    (`metrics.columns`, on `row_inputs`)."""
    return fa_ra_mia(row_inputs(forget, retain, holdout, forget_rows, holdout_rows, metrics_cfg, seed))


def fa_ra_mia(inputs: dict) -> dict:
    from mmunlearn.metrics.columns import row_values

    values = row_values(inputs)
    return {k: values[k] for k in ("FA", "RA", "MIA")}


def _value(name: str, v: Any) -> float:
    if v is None or not np.isfinite(v):
        raise UserError(f"text branch: metric {name} is undefined ({v!r}): too few rows or a diverged model")
    return float(v)


class Scorer:
    """The passes of `models.engine` that one row needs, made on an inference model (`merged`) as
    the main evaluator makes them: `engine.evaluate` over the forget rows (answer distributions
    and hidden states kept) and the retain rows, `engine.score` over the holdout rows."""

    def __init__(self, data: TextData, params: dict, seed: int):
        self.data, self.seed = data, seed
        self.cfg = params["metrics"]
        self.bs = int(self.cfg["batch_size"])
        self.targets = list(params["finetune"]["lora"]["target_modules"])

    def evaluate(self, model, rs: RowSet, full: bool = False):
        """`engine.evaluate` of `rs` (`full`: with the answer distributions and hidden states)."""
        from mmunlearn.models.engine import evaluate

        return evaluate(model, self.data.processor, rs.rows, _no_images, self.bs, keep_dist=full,
                        hidden_layer=-2 if full else None, enc=rs.enc)

    def accuracy(self, model, rs: RowSet) -> float:
        from mmunlearn.metrics import accuracy

        return _value("accuracy", accuracy(self.evaluate(model, rs).frame.correct.to_numpy()))

    def oracle(self, model, setting: Setting) -> dict:
        """What every row of a setting compares with: the oracle's forget pass and target weights."""
        from mmunlearn.metrics.evaluate import target_weights
        from mmunlearn.models.engine import score

        return {"forget": score(model, setting.forget.enc, self.data.pad, self.bs, keep_dist=True),
                "weights": {n: w.clone() for n, w in target_weights(model, self.targets).items()}}

    def inputs(self, model, setting: Setting, forget=None) -> dict:
        """`row_inputs` of `model` on `setting` (`forget`: its forget pass, when already made)."""
        from mmunlearn.models.engine import score

        forget = forget if forget is not None else self.evaluate(model, setting.forget)
        holdout = score(model, setting.holdout.enc, self.data.pad, self.bs, hidden_layer=None)
        return row_inputs(forget, self.evaluate(model, setting.retain_eval), holdout, setting.forget.rows,
                          setting.holdout.rows, self.cfg, self.seed)

    def headline(self, model, setting: Setting) -> dict:
        """FA, RA, MIA of `model` on `setting`."""
        return fa_ra_mia(self.inputs(model, setting))

    def row(self, model, setting: Setting, oracle: dict) -> dict:
        """Every row metric (`metrics.columns`) of `model` on `setting` vs its oracle."""
        from mmunlearn.metrics.columns import row_values
        from mmunlearn.metrics.evaluate import target_weights

        inputs = {**self.inputs(model, setting, self.evaluate(model, setting.forget, full=True)),
                  "oracle": oracle["forget"], "weights": (target_weights(model, self.targets), oracle["weights"])}
        return {k: _value(k, v) for k, v in row_values(inputs).items()}


# ---- the branch -----------------------------------------------------------------------------------

def scale_values(params: dict, cfg: dict) -> dict:
    """The branch's knobs at `params["scale"]`; null = the main pipeline's value (epochs:
    `finetune.epochs`; batch: `finetune.batch_size` for training, `unlearn.batch_size` for
    unlearning), no cap (max_steps), `metrics.eval_retain_rows` (eval_retain; 0 = all)."""
    def at(v):
        return by_scale(v, params)

    epochs, batch = at(cfg["epochs"]), at(cfg["batch_size"])
    return {"epochs": float(at(params["finetune"]["epochs"]) if epochs is None else epochs),
            "train_batch": int(params["finetune"]["batch_size"] if batch is None else batch),
            "unlearn_batch": int(params["unlearn"]["batch_size"] if batch is None else batch),
            "max_steps": at(cfg["max_steps"]), "eval_retain": eval_retain(params, at(cfg["eval_retain"]))}


def eval_retain(params: dict, value: int | None) -> int | None:
    """The branch's retain sample size: its own value, else the main pipeline's (None = all)."""
    if value is None:
        value = int(by_scale(params["metrics"]["eval_retain_rows"], params)) or None
    return value


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
    from mmunlearn.parallel import run_jobs

    sv = scale_values(params, cfg)
    t0 = time.process_time()

    def tick(what: str, n: int = 1) -> None:
        if progress is not None:
            progress.set_postfix_str(f"seed {seed} {what}", refresh=False)
            progress.update(n)

    trained, holdout = data.split("forget", "retain"), data.split("holdout")
    ft = train_lora(lm, trained, data.pad, params, sv["epochs"], sv["train_batch"], seed)
    t = time.process_time()
    seconds = {"finetune": t - t0, "oracles": 0.0, "unlearn": 0.0, "evaluate": 0.0}
    scorer, model = Scorer(data, params, seed), merged(ft)
    memo = {"trained_acc": scorer.accuracy(model, trained), "holdout_acc": scorer.accuracy(model, holdout)}
    seconds["evaluate"] += time.process_time() - t
    tick("fine-tuned")
    out = {"rows": [], "memorisation": memo, "skipped": {}}
    if baselines:
        out["baselines"] = []
    shared = {"lm": lm, "data": data, "ft": ft, "params": params, "sv": sv, "seed": seed, "baselines": baselines}
    # the settings side by side (`runtime.unimodal.text.workers`); each job seeds its own draws
    for res in run_jobs(_setting_job, list(VARIANTS), int(cfg["workers"]), per_job=True, shared=shared):
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


def _setting_job(shared: dict, variant: str) -> dict:
    """One setting of one seed: its oracle, then every method unlearned and scored against it."""
    from mmunlearn.models.arch import UnsupportedModel

    lm, data, ft, params, sv, seed = (shared[k] for k in ("lm", "data", "ft", "params", "sv", "seed"))
    seconds = {"oracles": 0.0, "unlearn": 0.0, "evaluate": 0.0}

    def lap(phase: str, since: float) -> float:
        now = time.process_time()
        seconds[phase] += now - since
        return now

    t = time.process_time()
    setting = data.setting(variant, seed, sv["eval_retain"])
    oracle_model = merged(train_lora(lm, setting.retain, data.pad, params, sv["epochs"], sv["train_batch"], seed))
    t = lap("oracles", t)
    scorer = Scorer(data, params, seed)
    oracle = scorer.oracle(oracle_model, setting)
    key = {"dataset": setting.name, "seed": int(seed)}
    res: dict = {"setting": setting.name, "rows": [], "skipped": {}, "seconds": seconds}
    if shared["baselines"]:
        res["baselines"] = [{**key, "method": "oracle", **scorer.row(oracle_model, setting, oracle)},
                            {**key, "method": "finetuned", **scorer.row(merged(ft), setting, oracle)}]
    t = lap("evaluate", t)
    for method in params["methods"]:
        try:
            model, state = unlearn(method, ft, data, setting, params, sv, seed)
        except UnsupportedModel as err:  # refused before any step (MANU: no vision part)
            res["skipped"][method] = str(err)
            continue
        t = lap("unlearn", t)
        res["rows"].append({**key, "method": method, **scorer.row(merged(model, state.get("pruned")), setting, oracle)})
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


def validate_cfg(cfg: Any, params: dict | None = None, key: str = KEY) -> None:
    """Raise ParamError(key, value, why) for any value the branch cannot run with."""
    keys(key, cfg, tuple(DEFAULT_CFG))
    model = cfg["model"]
    if not isinstance(model, str):
        raise ParamError(f"{key}.model", model, "must be a checkpoint directory path ('' = the base VLM's LM)")
    if model and not (Path(model).expanduser() / "config.json").is_file():
        raise ParamError(f"{key}.model", model, "not a local checkpoint directory (no config.json)")
    per_scale(f"{key}.epochs", cfg["epochs"], lambda k, v: positive(k, v, allow_none=True))
    per_scale(f"{key}.batch_size", cfg["batch_size"], lambda k, v: integer(k, v, lo=1, allow_none=True))
    per_scale(f"{key}.max_steps", cfg["max_steps"], lambda k, v: integer(k, v, lo=1, allow_none=True))
    per_scale(f"{key}.eval_retain", cfg["eval_retain"], lambda k, v: integer(k, v, lo=2, allow_none=True))
    integer(f"{key}.threads", cfg["threads"], lo=1)
    integer(f"{key}.workers", cfg["workers"], lo=0)
    if params is not None:
        methods = params.get("methods")
        if not isinstance(methods, list) or len(set(methods)) < 2:
            raise ParamError("methods", methods, "the text branch needs at least 2 methods to compare")
