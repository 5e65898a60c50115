"""Answer-token log-probabilities from one forward pass (left-padded batches).

With left padding every answer ends at the last position, so only the last K logits are needed
(`logits_to_keep`): the LM head runs over answer positions only. Batches are collated on the CPU
and moved to the model's device here (`to_model`), so every caller works on a GPU unchanged.
"""
from __future__ import annotations

import torch

from mmunlearn.models.arch import no_image_inputs
from mmunlearn.models.encode import IGNORE

MODEL_KEYS = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "image_sizes", "mm_token_type_ids")


def model_device(model) -> torch.device:
    """Where the model's inputs go: the device of its first parameter (the input embeddings)."""
    return next(model.parameters()).device


def to_model(batch: dict, model) -> dict:
    """`batch` with its tensors on the model's device (the same dict's tensors where they are
    there already: `.to` is then a no-op)."""
    device = model_device(model)
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def model_inputs(batch: dict, model=None) -> dict:
    """The model inputs of a collated batch; given the `model`, on its device, and a batch without
    images gets what that model needs instead (arch.no_image_inputs: BLIP-2 cannot run without
    image features)."""
    inputs = {k: v for k, v in batch.items() if k in MODEL_KEYS}
    if model is not None:
        inputs = to_model(inputs, model)
        if "pixel_values" not in inputs:
            inputs.update(no_image_inputs(model))
    return inputs


def forward_answers(model, batch: dict, inputs: dict | None = None, **kwargs):
    """(outputs, logits [B, K-1, V] predicting the answer slots, targets [B, K-1], mask [B, K-1]).
    `inputs` replaces the model inputs taken from `batch` (e.g. precomputed image features); the
    targets and mask are on the model's device."""
    labels = batch["labels"].to(model_device(model))
    k = int((labels != IGNORE).sum(1).max()) + 1
    out = model(**(model_inputs(batch, model) if inputs is None else inputs), logits_to_keep=k, **kwargs)
    logits = out.logits[:, :-1].float()
    targets = labels[:, -(k - 1):]
    mask = targets != IGNORE
    return out, logits, targets.clamp(min=0), mask


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log p(target) per answer slot, 0 where masked."""
    lp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return lp * mask


def answer_nll(model, batch: dict) -> torch.Tensor:
    """Mean token cross-entropy over all answer tokens of the batch (the NLL of SPEC section 6)."""
    _, logits, targets, mask = forward_answers(model, batch)
    return -token_logprobs(logits, targets, mask).sum() / mask.sum().clamp(min=1)


def sequence_logprob(model, batch: dict) -> torch.Tensor:
    """Per-sequence summed answer log-probability [B] (NPO's log pi(y|x))."""
    _, logits, targets, mask = forward_answers(model, batch)
    return token_logprobs(logits, targets, mask).sum(-1)
