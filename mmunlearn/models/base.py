"""Stage `base`: the analogue of a pretrained VLM.

For the tiny presets: build the model offline and train it (all parameters) on *public*
profiles, which share the generators but never a name or an identity cue with a private
profile, so it learns to read documents and answer in the QA format without knowing anyone
private. For a real checkpoint: resolve it offline and record where it is and its dtype on a GPU
(`base.dtype`, from the model's preset): nothing is trained or copied.
"""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from mmunlearn.data.profiles import generate_profiles
from mmunlearn.data.qa import build_qa
from mmunlearn.data.render import mask, render_document, variants
from mmunlearn.data.schema import ALL, FULL, MASKABLE, image_name
from mmunlearn.io import atomic_dir, write_json
from mmunlearn.models.vlm import TINY_PRESETS, record_checkpoint, resolve_checkpoint

PUBLIC_SEED_SALT = 104729


def public_dataset(private: pd.DataFrame, per_domain: int, seed: int, image_size: int):
    """(QA rows, {image name: PIL image}) of public profiles, rendered in memory."""
    profiles = generate_profiles(per_domain, seed + PUBLIC_SEED_SALT, prefix="pub",
                                 exclude_names=frozenset(private["name"]),
                                 exclude_cues=frozenset(int(c) for c in private["cue"]))
    profiles["split"], profiles["task"] = "public", 0
    images = {}
    for p in profiles.to_dict("records"):
        full = render_document(p, image_size)
        for v in variants(p):
            fields = MASKABLE[p["domain"]] if v == ALL else [v]
            images[image_name(p["profile_id"], v)] = full if v == FULL else mask(full, p["domain"], fields)
    return build_qa(profiles, seed + PUBLIC_SEED_SALT).to_dict("records"), images


def chat_corpus(rows: list[dict], preset: str = "tiny-llava") -> list[str]:
    """The exact strings the model will see (the preset's chat template + answer + EOS), for the
    tokenizer."""
    import jinja2

    from mmunlearn.models.encode import user_message
    from mmunlearn.models.tiny import chat_template

    template = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(chat_template(preset))
    out = []
    for r in rows:
        messages = [user_message(r),
                    {"role": "assistant", "content": [{"type": "text", "text": str(r["answer"])}]}]
        out.append(template.render(messages=messages, add_generation_prompt=False))
    return out


def build_base(params: dict, out_dir: str | Path = "models/base", data_dir: str | Path = "data",
               metrics_path: str | Path = "outputs/base/metrics.json", progress: bool = True) -> dict:
    from mmunlearn.models.train import TrainConfig
    from mmunlearn.params import by_scale

    model_id = params["model"]
    seed = int(params["seed"])
    out_dir = Path(out_dir)
    if model_id not in TINY_PRESETS:
        path = resolve_checkpoint(model_id)
        dtype = str(params["base"]["dtype"])
        with atomic_dir(out_dir) as tmp:
            record_checkpoint(tmp, model_id, path, dtype)
        metrics = {"model": model_id, "trained": False, "dtype": dtype}
        write_json(metrics_path, metrics)
        return metrics

    import torch

    from mmunlearn.models.encode import encode
    from mmunlearn.models.engine import evaluate
    from mmunlearn.models.tiny import build_tiny
    from mmunlearn.models.train import train

    cfg = params["base"]
    private = pd.read_parquet(Path(data_dir) / "profiles.parquet", columns=["name", "cue"])
    rows, images = public_dataset(private, by_scale(cfg["public_profiles_per_domain"], params),
                                  seed, int(params["data"]["image_size"]))
    model, processor = build_tiny(chat_corpus(rows, model_id), seed, model_id)
    enc = encode(processor, rows, images.__getitem__)
    t0 = time.perf_counter()
    train(model, enc, processor.tokenizer.pad_token_id,
          TrainConfig(epochs=by_scale(cfg["epochs"], params), lr=float(by_scale(cfg["lr"], params)),
                      batch_size=int(cfg["batch_size"]), seed=seed), progress=progress)
    seconds = time.perf_counter() - t0
    ev = evaluate(model, processor, rows, images.__getitem__, enc=enc)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    metrics = {"model": model_id, "trained": True, "public_profiles": len({r["profile_id"] for r in rows}),
               "public_qa": len(rows), "public_acc": round(float(ev.frame.correct.mean()), 4),
               "parameters": int(sum(p.numel() for p in model.parameters())),
               "train_seconds": round(seconds, 1), "torch_threads": torch.get_num_threads()}
    write_json(metrics_path, metrics)
    return metrics
