"""The peers' evaluation loop, kept as the baseline of `eval.py` and of the engine's tests: one row
at a time through processor -> generate -> decode."""
from __future__ import annotations

from typing import Callable, Sequence

import torch


@torch.inference_mode()
def generate_per_sample(model, processor, rows: Sequence[dict], images: Callable,
                        max_new_tokens: int = 24) -> list[str]:
    """Greedy answer of every row, one `generate` call per row; answers stripped."""
    from mmunlearn.models.arch import generate
    from mmunlearn.models.encode import prompt
    from mmunlearn.models.scoring import to_model

    tok = processor.tokenizer
    texts = []
    was_training = model.training
    model.eval()
    for row in rows:
        text = prompt(processor, row)
        if isinstance(row.get("image"), str) and row["image"]:
            inputs = processor(text=[text], images=[images(row["image"])], return_tensors="pt")
        else:
            inputs = tok([text], return_tensors="pt")   # special tokens as the processor adds them
        out = generate(model, to_model(dict(inputs), model), max_new_tokens=max_new_tokens, do_sample=False,
                       pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        texts.append(tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    model.train(was_training)
    return texts
