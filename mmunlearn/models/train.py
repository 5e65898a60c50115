"""Supervised training of a VLM on encoded QA with the HF Trainer (so `accelerate launch` scales it).

Loss = mean token cross-entropy on answer tokens (labels are -100 elsewhere).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass

import torch

from mmunlearn.models.encode import Encoded, collate
from mmunlearn.models.scoring import answer_nll


@dataclass
class TrainConfig:
    epochs: float
    lr: float
    batch_size: int
    seed: int
    grad_accum: int = 1             # batches per optimizer step (effective batch = batch_size x grad_accum)
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    scheduler: str = "linear"
    adam_beta2: float = 0.98


class Sequences(torch.utils.data.Dataset):
    """Items carry `input_ids` so the Trainer's length-grouped sampler can batch similar lengths."""

    def __init__(self, enc: Encoded):
        self.enc = enc

    def __len__(self) -> int:
        return len(self.enc)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.enc.input_ids[i], "idx": i}


def make_trainer_class():
    from transformers import Trainer

    class AnswerTrainer(Trainer):
        """Trainer whose loss is computed on answer positions only (see scoring.forward_answers);
        `loss_fn(model, batch)` overrides it (unlearning objectives). The loss is a mean over the
        batch's answer tokens, not normalised by the Trainer's `num_items_in_batch`, so the Trainer
        divides it by the gradient-accumulation steps (the model's `**kwargs` would make it assume
        the opposite and sum the accumulated batches' means)."""

        loss_is_scaled_for_ga = False

        def __init__(self, *a, loss_fn=None, **kw):
            super().__init__(*a, **kw)
            self.loss_fn = loss_fn or answer_nll

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = self.loss_fn(model, inputs)
            return (loss, None) if return_outputs else loss

    return AnswerTrainer


def train(model, enc: Encoded, pad_id: int, cfg: TrainConfig, progress: bool = True,
          callbacks: list | None = None) -> list[dict]:
    """Train `model` in place on all sequences of `enc`; returns the Trainer's log history. The
    Trainer puts the model and batches on the device (one GPU, or each process's under
    `accelerate launch`); `callbacks`: extra `TrainerCallback`s (benchmarks/gpu.py times steps)."""
    from transformers import TrainingArguments

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            num_train_epochs=cfg.epochs,
            learning_rate=cfg.lr,
            per_device_train_batch_size=cfg.batch_size,
            gradient_accumulation_steps=cfg.grad_accum,
            weight_decay=cfg.weight_decay,
            warmup_steps=cfg.warmup_ratio,
            lr_scheduler_type=cfg.scheduler,
            adam_beta2=cfg.adam_beta2,
            seed=cfg.seed,
            data_seed=cfg.seed,
            save_strategy="no",
            report_to=[],
            logging_strategy="epoch",
            disable_tqdm=not progress,
            dataloader_num_workers=0,
            remove_unused_columns=False,
            train_sampling_strategy="group_by_length",
            use_cpu=not torch.cuda.is_available(),
        )
        trainer = make_trainer_class()(model=model, args=args, train_dataset=Sequences(enc), callbacks=callbacks,
                                       data_collator=lambda items: collate(enc, [it["idx"] for it in items], pad_id))
        trainer.train()
        return list(trainer.state.log_history)
