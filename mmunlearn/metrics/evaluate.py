"""Every metric of SPEC section 7: for `unlearn@<method>` (after unlearning, same process) and
stage `evaluate_baselines`.

Per unlearned model (the last checkpoint of each variant and seed) the batched engine makes one
teacher-forced pass (plus greedy generation for ROUGE) over its forget, retain and holdout rows;
the oracle of the variant (retrained without the forget set) makes one pass over the forget rows.
All logit-based metrics read from those passes:

- FA / RA: accuracy on forget / retain rows (classification: option likelihood; generation and
  cloze: normalized exact or containment match of the greedy answer).
- MIA: ROC-AUC of forget (members) vs holdout (non-members) for loss, zlib (mean log-prob / zlib
  bytes), Min-K% and Min-K%++; the paper's attack (logistic regression on max p, -entropy, margin,
  fitted on class-balanced draws) whose member rate is `MIA`.
- AD, JS (token-id aligned), oracle distance over the LoRA-targeted weights, ROUGE-L, truth ratio
  and KS forget quality vs the oracle, UMU modality alignment, KR (relearning, with the oracle
  relearned the same way as control: `KR_vs_oracle`, see `metrics.recovery`; and probes).
The released row's columns are the registry's row metrics (`metrics.columns.row_values` over
those passes); the rest of each document is detail.
- Continual (icu variant): A[t][i] = forget accuracy on task i after stage t, stage 0 being the
  fine-tuned model, with retained utility on a fixed retain subsample.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from mmunlearn.data.qa import option_pools
from mmunlearn.io import write_json, write_parquet
from mmunlearn.methods.runner import PRUNED, VARIANTS, Sampler, variant_tasks
from mmunlearn.metrics import (accuracy, continual_metrics, forget_quality, loss_score, mia_attack,
                               mia_auc, min_k_pp_score, min_k_score, modality_alignment, rouge_l,
                               truth_ratio, upper_triangular, zlib_score)
from mmunlearn.metrics.probes import PROBES, probe_rows
from mmunlearn.metrics.recovery import kr_gap_reason, kr_summary, recovered
from mmunlearn.metrics.columns import headline_metrics, row_metrics, row_values
from mmunlearn.metrics.rows import mia_features, prediction, strict_match
from mmunlearn.params import by_scale, runtime


def _r(x, nd: int = 6):
    """JSON-safe rounding (None for missing / NaN)."""
    if x is None:
        return None
    x = float(x)
    return None if np.isnan(x) else round(x, nd)


def oracle_name(params: dict, variant: str, n_tasks: int) -> str | None:
    """The oracle retrained without this variant's forget set (None if params list none)."""
    from mmunlearn.data.splits import static_split_name

    if variant == "icu":
        stages = [n_tasks if s == "last" else int(s) for s in params["oracle"]["stages"]]
        return f"icu_task{n_tasks:03d}" if n_tasks in stages else None
    return static_split_name(variant, float(params["unlearn"][f"{variant}_ratio"]))


def target_weights(model, target_modules: list[str]) -> dict[str, torch.Tensor]:
    """The weights LoRA adapts (the trainable tensors of fine-tuning), read from a merged model."""
    pattern = re.compile(rf".*\.({'|'.join(map(re.escape, target_modules))})\.weight$")
    return {n: p.detach() for n, p in model.named_parameters() if pattern.match(n)}


def sample(rows: list[dict], n: int, key: list[int]) -> list[dict]:
    """`n` of `rows` (all when n is 0 or not below their count), drawn by `key`, in their order."""
    if not 0 < n < len(rows):
        return rows
    idx = np.sort(np.random.default_rng(key).choice(len(rows), n, replace=False))
    return [rows[i] for i in idx]


@dataclass
class Pass:
    """One model's results on one row set: per-row frame (correct, generated, ...) and raw scores."""

    frame: pd.DataFrame
    scores: object


class Evaluator:
    """Shared state of one evaluation process: data, processor, encodings (made once, reused by
    every model) and the metrics params."""

    def __init__(self, params: dict, base_dir="models/base", data_dir="data", progress: bool = False,
                 oracle_root="models/oracle"):
        from mmunlearn.models.encode import file_images
        from mmunlearn.models.vlm import base_source

        self.params, self.progress = params, progress
        self.base_dir, self.data_dir, self.oracle_root = Path(base_dir), Path(data_dir), Path(oracle_root)
        self.qa = pd.read_parquet(self.data_dir / "qa.parquet")
        self.profiles = pd.read_parquet(self.data_dir / "profiles.parquet")
        self.pools = option_pools(self.profiles)
        self.images = file_images(self.data_dir)
        self.n_tasks = int(self.profiles.task.max())
        self.cfg = params["metrics"]
        self.bs = int(self.cfg["batch_size"])
        from transformers import AutoProcessor

        from mmunlearn.models.encode import ImageCache

        self.processor = AutoProcessor.from_pretrained(base_source(self.base_dir))
        self.image_cache = ImageCache()
        self._enc: dict[tuple, object] = {}
        self._samples: dict[str, object] = {}

    # ---- data -------------------------------------------------------------------------------
    def rows(self, profile_ids) -> list[dict]:
        return self.qa[self.qa.profile_id.isin(set(profile_ids))].to_dict("records")

    def sets(self, variant: str) -> dict[str, list[dict]]:
        """The variant's rows every model is scored on: all its forget rows, a fixed seeded sample
        of `metrics.eval_retain_rows` of its retain rows (RA, ROUGE_retain, the retain side of
        modality alignment: the same rows for every model of the variant; 0 = all), and every
        holdout row."""
        tasks, retain_ids = variant_tasks(variant, self.params, self.profiles)
        forget_ids = [p for _, ids in tasks for p in ids]
        n_retain = int(by_scale(self.cfg["eval_retain_rows"], self.params))
        retain = sample(self.rows(retain_ids), n_retain, [int(self.params["seed"]), 0xE0, VARIANTS.index(variant)])
        return {"forget": self.rows(forget_ids), "retain": retain,
                "holdout": self.rows(self.profiles.profile_id[self.profiles.split == "holdout"])}

    def encoded(self, rows: list[dict]):
        from mmunlearn.models.encode import encode

        key = tuple(r["qa_id"] for r in rows)
        if key not in self._enc:
            self._enc[key] = encode(self.processor, rows, self.images, cache=self.image_cache)
        return self._enc[key]

    def retain_subsample(self) -> list[dict]:
        """Fixed seeded retain rows for the continual utility curve (`metrics.continual_retain_rows`),
        drawn from the icu variant's evaluated retain rows, so that the last stage reads the final
        model's retain pass."""
        if "retain_subsample" not in self._samples:   # fixed: drawn once, read by every stage
            self._samples["retain_subsample"] = sample(self.sets("icu")["retain"], int(self.cfg["continual_retain_rows"]),
                                                       [int(self.params["seed"]), 0xC0])
        return self._samples["retain_subsample"]

    def task_sample(self) -> dict[int, list[dict]]:
        """{task: its forget rows in the continual matrix}: a fixed seeded sample of
        `metrics.continual_task_rows` (0 = all) per task. A[t][i] has n(n+1)/2 cells, so the
        100-task scale pays 5050 cells of this many rows; task i's sample depends on the seed and
        i only, the same at every scale and stage."""
        if "task_sample" not in self._samples:
            k, seed = int(self.cfg["continual_task_rows"]), int(self.params["seed"])
            forget = self.profiles[self.profiles.split == "forget"]
            self._samples["task_sample"] = {i: sample(self.rows(forget.profile_id[forget.task == i]), k, [seed, 0xC1, i])
                                            for i in range(1, self.n_tasks + 1)}
        return self._samples["task_sample"]

    # ---- models -----------------------------------------------------------------------------
    def load(self, adapter_dir: Path):
        from mmunlearn.models.vlm import load_checkpoint

        return load_checkpoint(self.base_dir, adapter_dir)[0]

    def run(self, model, rows: list[dict], keep_dist: bool = False, option_texts: bool = False) -> Pass:
        """The engine's pass; greedy texts of option-answered rows only with `option_texts` (ROUGE)."""
        from mmunlearn.models.engine import evaluate

        ev = evaluate(model, self.processor, rows, self.images, self.bs, keep_dist=keep_dist,
                      enc=self.encoded(rows), option_texts=option_texts)
        frame = ev.frame.copy()
        for col in ("pair_id", "split", "task", "answer", "profile_id"):
            frame[col] = [r[col] for r in rows]
        return Pass(frame, ev.scores)

    def scores(self, model, rows: list[dict], keep_dist: bool = False):
        from mmunlearn.models.engine import score

        return score(model, self.encoded(rows), self.processor.tokenizer.pad_token_id, self.bs, keep_dist)

    def option_logprobs(self, model, rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        """(mean log-prob of the correct option [n], of each wrong option [n, k]) for
        classification rows: the inputs of the truth ratio."""
        from mmunlearn.models.encode import repeat
        from mmunlearn.models.engine import score

        cls = [r for r in rows if r["form"] == "classification" and len(r["options"])]
        if not cls:
            return np.zeros(0), np.zeros((0, 0))
        k = len(cls[0]["options"])
        rep = [i for i in range(len(cls)) for _ in range(k)]
        flat = repeat(self.encoded(cls), rep, self.processor.tokenizer, [o for r in cls for o in r["options"]])
        lp = score(model, flat, self.processor.tokenizer.pad_token_id, self.bs).logprob_mean.reshape(len(cls), k)
        gold = np.array([list(r["options"]).index(r["answer"]) for r in cls])
        correct = lp[np.arange(len(cls)), gold]
        wrong = np.stack([np.delete(lp[i], gold[i]) for i in range(len(cls))])
        return correct, wrong


# ---- metric groups ------------------------------------------------------------------------------
def mia_metrics(member, nonmember, member_answers, nonmember_answers, cfg: dict, seed: int) -> dict:
    """Loss / zlib / Min-K% / Min-K%++ AUCs and the paper's attack on class-balanced draws
    (`mia_attack`); zlib reads the mean token log-prob (the zlib ratio of the Min-K% paper)."""
    k = float(cfg["min_k"])
    out = {
        "loss_auc": mia_auc(loss_score(member.logprob_mean), loss_score(nonmember.logprob_mean)),
        "zlib_auc": mia_auc(zlib_score(member.logprob_mean, member_answers),
                            zlib_score(nonmember.logprob_mean, nonmember_answers)),
        "min_k_auc": mia_auc(min_k_score(member.token_logprobs, k), min_k_score(nonmember.token_logprobs, k)),
        "min_k_pp_auc": mia_auc(min_k_pp_score(member.token_zpp, k), min_k_pp_score(nonmember.token_zpp, k)),
    }
    feats = lambda s: mia_features(s.max_prob, s.neg_entropy, s.margin)  # noqa: E731
    attack = mia_attack(feats(member), feats(nonmember), folds=int(cfg["mia_folds"]), seed=seed,
                        draws=int(cfg["mia_draws"]))
    out.update(attack_auc=attack["auc"], member_rate=attack["member_rate"],
               nonmember_rate=attack["nonmember_rate"])
    res = {k2: _r(v) for k2, v in out.items()}
    res.update(attack_draws=attack["draws"], attack_class_size=attack["class_size"])
    return res


def by_view(frame: pd.DataFrame) -> dict:
    return {f"{view}": _r(accuracy(g.correct.to_numpy())) for view, g in frame.groupby("view", sort=True)}


def modality(forget: Pass, retain: Pass) -> dict:
    f = forget.frame.assign(split="forget")
    r = retain.frame.assign(split="retain")
    both = pd.concat([f, r], ignore_index=True)
    return {k: (_r(v) if isinstance(v, float) else v) for k, v in modality_alignment(both).items()}


def with_rouge(p: Pass) -> Pass:
    p.frame["rouge"] = rouge_l(list(p.frame.generated), [str(a) for a in p.frame.answer])
    return p


def relearn_folds(forget_rows: list[dict], fraction: float, seed: int) -> list[tuple[list[dict], list[dict]]]:
    """(train rows, test rows) per fold of KR (a): the forget pairs (both views of a fact on the
    same side) in a seeded order, cut into K = round(1 / `fraction`) near-equal parts (at least 2);
    fold j relearns on part j and is measured on the others. Every pair is relearned on once and
    measured in every other fold, so no single random split decides KR (cross-fitting). No fold
    with fewer than 2 pairs."""
    pairs = sorted({r["pair_id"] for r in forget_rows})
    k = min(len(pairs), max(2, int(round(1 / float(fraction)))))
    if k < 2:
        return []
    order = np.array(pairs)[np.random.default_rng([seed, 0x4B]).permutation(len(pairs))]
    parts = [set(p.tolist()) for p in np.array_split(order, k)]
    return [([r for r in forget_rows if r["pair_id"] in part], [r for r in forget_rows if r["pair_id"] not in part])
            for part in parts]


def relearned_correct(ev: Evaluator, model, folds, seed: int) -> np.ndarray:
    """Per (fold, test row), in fold order: correct after `relearn_model` on the fold's train
    rows. Each fold's adapter is unloaded afterwards, so `model` is left as it was."""
    out = []
    for train_rows, test_rows in folds:
        relearned = relearn_model(ev, model, train_rows, seed)
        try:
            out.append(ev.run(relearned, test_rows).frame.correct.to_numpy(dtype=bool))
        finally:
            relearned.unload()
    return np.concatenate(out) if out else np.zeros(0, dtype=bool)


def fold_ids(folds) -> list[str]:
    """The test rows' qa_ids of every fold, in fold order (a row once per fold it is tested in)."""
    return [r["qa_id"] for _, test_rows in folds for r in test_rows]


def relearn_control(ev: Evaluator, model, forget_rows: list[dict], seed: int,
                    before: pd.Series | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per (fold, test row) correctness before and after the relearning of `relearn_kr` (same
    folds, steps and seed) for a model whose KR is not asked for: a control. `before`: its
    per-row correctness on the forget rows by qa_id, where its forget pass was made already."""
    folds = relearn_folds(forget_rows, float(ev.cfg["relearn_fraction"]), seed)
    if not folds:
        return np.zeros(0, dtype=bool), np.zeros(0, dtype=bool)
    if before is None:
        before = ev.run(model, forget_rows).frame.set_index("qa_id").correct
    return before[fold_ids(folds)].to_numpy(dtype=bool), relearned_correct(ev, model, folds, seed)


def kr_controls(ev: Evaluator, variant: str, seed: int, finetuned, oracle=None, oracle_before=None,
                finetuned_before=None) -> dict:
    """KR's controls for one forget set and seed (`metrics.recovery`): the oracle's recovery
    after the same relearning (what it teaches a model that never knew the data, on the rows the
    fine-tuned model answers and the oracle does not), and the FAs of the fine-tuned model and the
    oracle before / after it. They do not depend on the method, so stage `evaluate_baselines`
    computes them once (`baselines` reads them back). `*_before`: per-row correctness on the
    forget rows by qa_id (`relearn_control`)."""
    forget_rows = ev.sets(variant)["forget"]
    ft, ft_after = relearn_control(ev, finetuned, forget_rows, seed, finetuned_before)
    out = {"fa_finetuned_relearned": accuracy(ft_after), "fa_oracle": None, "fa_oracle_relearned": None,
           "oracle_recovery": None}
    if oracle is not None:
        o, o_after = relearn_control(ev, oracle, forget_rows, seed, oracle_before)
        out.update(fa_oracle=accuracy(o), fa_oracle_relearned=accuracy(o_after),
                   oracle_recovery=recovered(ft, o, o_after))
    return {k: _r(v) for k, v in out.items()}


def relearn_kr(ev: Evaluator, model, forget: Pass, forget_rows: list[dict], finetuned_correct: dict[str, bool],
               seed: int, control: dict | None = None) -> dict:
    """KR (a) and KR_vs_oracle (`metrics.recovery`), cross-fitted over `relearn_folds`: per
    (fold, test row) correctness by the one row definition (`rows.row_correct`, the `correct` of
    `Evaluator.run`) -- unlearned (its forget pass), fine-tuned (`finetuned_correct`, from
    `evaluate_baselines`) and relearned -- and the oracle's recovery (`control`, `kr_controls`'s
    output). Nothing is relearned where KR is null anyway (no folds, gap below
    `metrics.kr_min_gap`); `model` is left as it was."""
    folds = relearn_folds(forget_rows, float(ev.cfg["relearn_fraction"]), seed)
    gap = float(ev.cfg["kr_min_gap"])
    out = {"steps": int(ev.cfg["relearn_steps"]), "kr_min_gap": gap,
           "folds": [{"train_rows": len(a), "test_rows": len(b)} for a, b in folds],
           "fa_unlearned": None, "fa_finetuned": None, "fa_relearned": None,
           **dict.fromkeys(("fa_finetuned_relearned", "fa_oracle", "fa_oracle_relearned", "oracle_recovery")),
           **(control or {})}
    null = {"kr": None, "kr_vs_oracle": None, "kr_net": None, "relearn_loss": None}
    if not folds:
        reason = "fewer than 2 forget pairs: no relearning folds"
        return {**out, **null, "kr_reason": reason, "kr_vs_oracle_reason": reason}
    ids = fold_ids(folds)
    rows = {"unlearned": forget.frame.set_index("qa_id").correct[ids].to_numpy(dtype=bool),
            "finetuned": np.array([bool(finetuned_correct[q]) for q in ids])}
    out.update(fa_unlearned=_r(accuracy(rows["unlearned"])), fa_finetuned=_r(accuracy(rows["finetuned"])))
    reason = kr_gap_reason(accuracy(rows["unlearned"]), accuracy(rows["finetuned"]), gap)
    if reason is not None:
        return {**out, **null, "kr_reason": reason, "kr_vs_oracle_reason": reason}
    rows["relearned"] = relearned_correct(ev, model, folds, seed)
    out["fa_relearned"] = _r(accuracy(rows["relearned"]))
    kr = kr_summary(**rows, min_gap=gap, oracle_recovery=out["oracle_recovery"])
    return {**out, **{k: (v if k.endswith("reason") else _r(v)) for k, v in kr.items()}}


def knowledge_recoverability(ev: Evaluator, model, forget: Pass, forget_rows: list[dict],
                             finetuned_correct: dict[str, bool], seed: int, control: dict | None = None) -> dict:
    """(a) relearning (`relearn_kr`, with the oracle control) and (b) probes of the failed forget
    rows (strict matching)."""
    probes, probe_score = run_probes(ev, model, forget, forget_rows, seed)
    relearn = relearn_kr(ev, model, forget, forget_rows, finetuned_correct, seed, control)
    return {"relearn": relearn, "probe_score": _r(probe_score), "probes": probes}


def answered(frame_row, row: dict) -> tuple[str, bool]:
    """(what the model answered for `row` in its pass: `rows.prediction`; whether that is the gold
    answer under strict matching)."""
    pred = prediction(row, int(frame_row.chosen_option), frame_row.generated)
    return pred, strict_match(pred, row["answer"])


def run_probes(ev: Evaluator, model, forget: Pass, forget_rows: list[dict], seed: int) -> tuple[list[dict], float | None]:
    """Per failed forget row (FA decision false) among a fixed seeded sample of
    `metrics.probe_rows` forget rows (the same rows for every model; 0 = all): each probe's
    question, prediction and strict correctness, and kr_score = share of probes answered; plus the
    mean kr_score."""
    asked = {r["qa_id"] for r in sample(forget_rows, int(by_scale(ev.cfg["probe_rows"], ev.params)), [seed, 0x9B])}
    failed = [r for r, ok in zip(forget_rows, forget.frame.correct) if not ok and r["qa_id"] in asked]
    if not failed:
        return [], None
    prows = probe_rows(failed, forget_rows, ev.profiles, ev.pools, seed)
    pf = ev.run(model, prows).frame
    direct = forget.frame.set_index("qa_id")
    by_source: dict[str, dict] = {}
    for fr, row in zip(pf.itertuples(), prows):
        pred, ok = answered(fr, row)
        by_source.setdefault(row["source"], {})[row["probe"]] = {"question": row["question"], "prediction": pred,
                                                                 "correct": bool(ok)}
    out = []
    for row in failed:
        d = direct.loc[row["qa_id"]]
        pred, ok = answered(d, row)
        probes = {k: by_source[row["qa_id"]][k] for k in PROBES if k in by_source.get(row["qa_id"], {})}
        score = float(np.mean([p["correct"] for p in probes.values()])) if probes else None
        out.append({"sample_id": row["qa_id"], "question": row["question"], "answer": str(row["answer"]),
                    "view": row["view"], "form": row["form"],
                    "direct_prediction": pred, "direct_correct": bool(ok),
                    "fa_correct": bool(d.correct), "probes": probes, "kr_score": _r(score)})
    scores = [o["kr_score"] for o in out if o["kr_score"] is not None]
    return out, (float(np.mean(scores)) if scores else None)


def relearn_model(ev: Evaluator, model, rows: list[dict], seed: int):
    """The relearning attack of KR (a): a fresh LoRA trained `metrics.relearn_steps` steps on `rows`
    with the fine-tuning recipe -- `finetune.add_lora`'s adapter, `finetune.lr` and
    `finetune.batch_size`, NLL on the answer tokens, and `models.train.TrainConfig`'s AdamW
    betas / weight decay and learning-rate schedule (what the HF Trainer of `models.train.train`
    uses). Only the step count differs from fine-tuning, and batches come from the seeded
    `Sampler`."""
    from transformers import get_scheduler

    from mmunlearn.methods.base import nll_of
    from mmunlearn.models.finetune import add_lora, learning_rate
    from mmunlearn.models.train import TrainConfig

    fcfg, steps = ev.params["finetune"], int(ev.cfg["relearn_steps"])
    cfg = TrainConfig(epochs=1, lr=learning_rate(ev.params), batch_size=int(fcfg["batch_size"]), seed=seed)
    model = add_lora(model, ev.params)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                            betas=(0.9, cfg.adam_beta2), weight_decay=cfg.weight_decay)
    sched = get_scheduler(cfg.scheduler, opt, num_warmup_steps=int(cfg.warmup_ratio * steps), num_training_steps=steps)
    batches = Sampler(ev.encoded(rows), ev.processor.tokenizer.pad_token_id, cfg.batch_size,
                      np.random.default_rng([seed, 0x52]))
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        nll_of(model, batches()).backward()
        opt.step()
        sched.step()
    return model.eval()


def evaluate_model(ev: Evaluator, model, variant: str, seed: int, oracle=None, oracle_pass=None,
                   finetuned_correct: dict[str, bool] | None = None, kr: bool = True,
                   kr_control: dict | None = None) -> dict:
    """Every metric of one model on one variant's forget / retain / holdout rows; KR with
    `finetuned_correct` (and `kr_control`, `kr_controls` for this variant and seed)."""
    sets = ev.sets(variant)
    forget = with_rouge(ev.run(model, sets["forget"], keep_dist=oracle is not None, option_texts=True))
    retain = with_rouge(ev.run(model, sets["retain"], option_texts=True))
    holdout = ev.scores(model, sets["holdout"])
    inputs = {"forget": forget, "retain": retain, "holdout": holdout,
              "oracle": oracle_pass if oracle is not None else None,
              "mia": mia_metrics(forget.scores, holdout, [str(r["answer"]) for r in sets["forget"]],
                                 [str(r["answer"]) for r in sets["holdout"]], ev.cfg, seed)}
    if oracle is not None:
        targets = list(ev.params["finetune"]["lora"]["target_modules"])
        inputs["weights"] = (target_weights(model, targets), target_weights(oracle, targets))
    out = {
        **{k: _r(v) for k, v in row_values(inputs).items()},
        "forget_by_view": by_view(forget.frame),
        "retain_by_view": by_view(retain.frame),
        "ROUGE_forget": _r(forget.frame.rouge.mean()),
        "ROUGE_retain": _r(retain.frame.rouge.mean()),
        "mia": inputs["mia"],
        "modality": modality(forget, retain),
        "rows": {"forget": len(sets["forget"]), "retain": len(sets["retain"]), "holdout": len(sets["holdout"])},
        "truth_ratio": None, "forget_quality": None,
    }
    if oracle is not None:
        tr_c, tr_w = ev.option_logprobs(model, sets["forget"])
        otr_c, otr_w = ev.option_logprobs(oracle, sets["forget"])
        tr, otr = truth_ratio(tr_c, tr_w), truth_ratio(otr_c, otr_w)
        out["truth_ratio"] = _r(np.mean(tr)) if len(tr) else None
        out["forget_quality"] = {k: _r(v) for k, v in forget_quality(tr, otr).items()}
    out["_forget_pass"], out["_retain_pass"] = forget, retain
    if kr and finetuned_correct is not None:
        out["kr"] = knowledge_recoverability(ev, model, forget, sets["forget"], finetuned_correct, seed, kr_control)
        out["KR"] = out["kr"]["relearn"]["kr"]
        out["KR_vs_oracle"] = out["kr"]["relearn"]["kr_vs_oracle"]
        out["KR_probe"] = out["kr"]["probe_score"]
    return out


def oracle_for(ev: Evaluator, variant: str):
    """(oracle model, its pass over the variant's forget rows) or (None, None)."""
    name = oracle_name(ev.params, variant, ev.n_tasks)
    path = ev.oracle_root / name if name else None
    if path is None or not path.is_dir():
        return None, None, name
    oracle = ev.load(path)
    return oracle, ev.scores(oracle, ev.sets(variant)["forget"], keep_dist=True), name


def stage_tasks(ev: Evaluator, t: int) -> list[int]:
    """The tasks whose samples stage t is asked: every task so far at every
    `metrics.continual_every`-th stage and the last, else task t alone (A[t][t], what
    effectiveness reads). Historical preservation then averages over the asked (t, i) pairs."""
    every = int(by_scale(ev.cfg["continual_every"], ev.params))
    return list(range(1, t + 1)) if t % every == 0 or t == ev.n_tasks else [t]


def stage_correct(ev: Evaluator, model, t: int) -> tuple[pd.Series, pd.Series]:
    """Stage t's per-row correctness by qa_id on the continual matrix's rows: the fixed samples of
    its tasks (`stage_tasks`, `Evaluator.task_sample`) and the fixed retain subsample."""
    tasks = ev.task_sample()
    asked = [r for i in stage_tasks(ev, t) for r in tasks[i]]
    return (ev.run(model, asked).frame.set_index("qa_id").correct,
            ev.run(model, ev.retain_subsample()).frame.set_index("qa_id").correct)


def saved_stages(ev: Evaluator, ckpt_root: Path) -> dict[int, tuple[pd.Series, pd.Series]]:
    """`stage_correct` of every checkpoint saved under `ckpt_root` before the last task (a run's
    checkpoints evaluated after the fact: `evaluate_method`)."""
    saved = sorted(int(p.name[4:]) for p in ckpt_root.glob("task*") if p.is_dir())
    return {t: stage_correct(ev, ev.load(ckpt_root / f"task{t:03d}"), t) for t in saved if t < ev.n_tasks}


def continual(ev: Evaluator, stages: dict[int, tuple[pd.Series, pd.Series]], final_forget: Pass,
              final_retain: Pass, finetuned_rows: pd.DataFrame) -> dict:
    """A[t][i] (forget accuracy on task i after stage t; stage 0 = fine-tuned) on each task's fixed
    sample (`Evaluator.task_sample`, its qa_ids in `task_rows`), and retained utility on a fixed
    retain subsample; a stage that was not asked a task (`stage_tasks`) leaves its cell None.
    `stages`: `stage_correct` of the stages between (every stage when the
    unlearning streams them, `branch.run_branch`; the saved checkpoints otherwise); the last
    stage reads the final model's passes (made before KR's relearning changes the model). Every
    stage is scored by the one row definition (`metrics.rows.row_correct`), as the fine-tuned
    model's rows are."""
    n = ev.n_tasks
    ids = {i: [r["qa_id"] for r in rows] for i, rows in ev.task_sample().items()}
    sub_ids = [r["qa_id"] for r in ev.retain_subsample()]
    A: list[list[float | None]] = [[None] * (n + 1) for _ in range(n + 1)]
    ra: list[float | None] = [None] * (n + 1)
    ft = finetuned_rows.set_index("qa_id").correct
    last = (final_forget.frame.set_index("qa_id").correct, final_retain.frame.set_index("qa_id").correct)
    every = {0: (ft, ft), **{t: v for t, v in stages.items() if 0 < t < n}, n: last}   # stage 0 asks every task
    for t, (forget, retain) in every.items():
        for i in range(1, (n if t == 0 else t) + 1):
            if pd.Index(ids[i]).isin(forget.index).all():   # asked at this stage (`stage_tasks`)
                A[t][i] = _r(accuracy(forget[ids[i]].to_numpy()))
        ra[t] = _r(accuracy(retain[sub_ids].to_numpy()))
    return {"A": A, "retain_accuracy": ra, "stages": sorted(t for t in every if t > 0), "retain_rows": len(sub_ids),
            "task_rows": {str(i): v for i, v in ids.items()},
            "metrics": continual_metrics(A, ra), "matrix": upper_triangular(A, include_baseline=True)}


def strip(res: dict) -> dict:
    return {k: v for k, v in res.items() if not k.startswith("_")}


def evaluate_variant(ev: Evaluator, method: str, variant: str, unlearned_root="models/unlearned",
                     ft_rows: pd.DataFrame | None = None, controls: dict | None = None,
                     stages: Callable[[int], dict] | None = None) -> dict[str, dict]:
    """{`<variant>_seed<seed>.json`: document} for the last checkpoint of each seed of one
    variant: the released row (dataset, method, seed, FA, RA, MIA, AD, JS, retrained_distance, KR,
    KR_vs_oracle, KR_probe, ROUGE_*) and every other metric. KR and the continual matrix need the
    fine-tuned model's per-row correctness (`ft_rows`, from `evaluate_baselines`); without it both
    are skipped. `controls` (`baselines`) hold KR's controls per variant and seed. `stages(seed)`:
    the continual stages already scored while unlearning (default: the saved checkpoints')."""
    ft_correct = dict(zip(ft_rows.qa_id, ft_rows.correct.astype(bool))) if ft_rows is not None else None
    oracle, opass, oname = oracle_for(ev, variant)
    docs = {}
    for seed in ev.params["seeds"]:
        t0 = time.perf_counter()
        root = Path(unlearned_root) / variant / method / str(seed)
        last = sorted(p for p in root.iterdir() if p.is_dir())[-1]
        model = ev.load(last)
        control = (controls or {}).get(variant, {}).get(str(seed))
        res = evaluate_model(ev, model, variant, int(seed), oracle, opass, ft_correct, kr_control=control)
        cont = None
        if variant == "icu" and ft_rows is not None:
            between = stages(int(seed)) if stages is not None else saved_stages(ev, root)
            cont = continual(ev, between, res["_forget_pass"], res["_retain_pass"], ft_rows)
        res = strip(res)
        row = {"dataset": variant, "method": method, "seed": int(seed),
               **{i.name: res[i.name] for i in row_metrics()},
               "KR": res.get("KR"), "KR_vs_oracle": res.get("KR_vs_oracle"), "KR_probe": res.get("KR_probe"),
               "ROUGE_forget": res["ROUGE_forget"], "ROUGE_retain": res["ROUGE_retain"]}
        doc = {"row": row, "checkpoint": str(last), "oracle": oname, "pruned": (last / PRUNED).is_file(), **res}
        if cont is not None:
            doc["continual"] = cont
        docs[f"{variant}_seed{seed}.json"] = doc
        print(f"[evaluate {method}] {variant} seed {seed}: " + "  ".join(
            f"{k} {row[k]}" for k in (*headline_metrics(), "KR", "KR_vs_oracle")) +
            f"  ({time.perf_counter() - t0:.1f} s)", flush=True)
    return docs


def finetuned_rows(out_root="outputs/eval") -> pd.DataFrame:
    return pd.read_parquet(Path(out_root) / "baselines" / "finetuned_rows.parquet")


def baselines(out_root="outputs/eval", kr: bool = True) -> tuple[pd.DataFrame | None, dict | None]:
    """What KR and the continual matrix read from `evaluate_baselines`: the fine-tuned model's
    per-row correctness and {variant: {seed: `kr_controls`}}; (None, None) without `kr`."""
    import json

    if not kr:
        return None, None
    docs = (json.loads(p.read_text()) for p in sorted((Path(out_root) / "baselines").glob("finetuned_*.json")))
    return finetuned_rows(out_root), {d["variant"]: d["kr_control"] for d in docs}


def write_method(out_root, method: str, docs: dict[str, dict]) -> dict:
    """outputs/eval/<method>/ with every document (written whole or not at all); the rows."""
    from mmunlearn.io import atomic_dir

    with atomic_dir(Path(out_root) / method) as tmp:
        for name, doc in sorted(docs.items()):
            write_json(tmp / name, doc)
    return {f"{d['row']['dataset']}/{d['row']['seed']}": d["row"] for d in docs.values()}


def evaluate_method(params: dict, method: str, unlearned_root="models/unlearned", out_root="outputs/eval",
                    progress: bool = True, variants=VARIANTS, base_dir="models/base", oracle_root="models/oracle",
                    data_dir="data", kr: bool = True) -> dict:
    """`evaluate_variant` for every variant -> outputs/eval/<method>/; `kr=False` skips KR and the
    continual matrix (no baselines needed)."""
    ev = Evaluator(params, base_dir=base_dir, data_dir=data_dir, progress=progress, oracle_root=oracle_root)
    ft, controls = baselines(out_root, kr)
    docs = {}
    for variant in variants:
        docs.update(evaluate_variant(ev, method, variant, unlearned_root, ft, controls))
    return write_method(out_root, method, docs)


def _baseline_job(args: tuple) -> dict:
    """The fine-tuned model's per-row correctness on every trained row (`variant` None), or its
    metrics on one variant vs the variant's oracle (with KR's controls per unlearning seed,
    `kr_controls`), and the oracle's own."""
    params, variant = args
    ev = Evaluator(params)
    ft = ev.load(Path("models/finetuned"))
    if variant is None:
        p = ev.run(ft, ev.qa[ev.qa.split != "holdout"].to_dict("records"))
        return {"finetuned_rows.parquet": pd.DataFrame({"qa_id": p.frame.qa_id, "correct": p.frame.correct.astype(bool)})}
    oracle, opass, oname = oracle_for(ev, variant)
    seed = int(params["seed"])
    own = evaluate_model(ev, oracle, variant, seed, kr=False) if oracle is not None else None
    mine = evaluate_model(ev, ft, variant, seed, oracle, opass, kr=False)

    def before(res):
        return res["_forget_pass"].frame.set_index("qa_id").correct if res is not None else None

    control = {str(s): kr_controls(ev, variant, int(s), ft, oracle, before(own), before(mine)) for s in params["seeds"]}
    docs = {f"finetuned_{variant}.json": {"variant": variant, "oracle": oname, "kr_control": control, **strip(mine)}}
    if own is not None:
        docs[f"oracle_{oname}.json"] = {"variant": variant, "oracle": oname, **strip(own)}
    return docs


def evaluate_baselines(params: dict, out_root="outputs/eval/baselines", progress: bool = True) -> dict:
    """The fine-tuned model (per-row correctness for KR and the continual stage 0; every metric
    per variant vs its oracle: the no-unlearning reference) and each oracle itself; one job per
    variant side by side (`runtime.metrics.workers`)."""
    from mmunlearn.io import atomic_dir
    from mmunlearn.parallel import run_jobs

    results = run_jobs(_baseline_job, [(params, v) for v in (None, *VARIANTS)], runtime(params, "metrics.workers"))
    out = {}
    with atomic_dir(out_root) as tmp:
        for docs in results:
            for name, doc in docs.items():
                if name.endswith(".parquet"):
                    write_parquet(tmp / name, doc)
                    continue
                write_json(tmp / name, doc)
                who = name[:-5].split("_", 1)
                if who[0] == "finetuned":
                    out[f"finetuned/{who[1]}"] = {i.name: doc[i.name] for i in row_metrics()}
                else:
                    out[f"oracle/{doc['variant']}"] = {k: doc[k] for k in ("FA", "RA", "MIA")}
    for k, v in out.items():
        print(f"[baselines] {k}: " + "  ".join(f"{m} {x}" for m, x in v.items()))
    return out
