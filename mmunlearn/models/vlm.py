"""Checkpoints: resolve offline, load through the Auto* classes onto the device, save atomically.

The embedded tiny presets are built by the `base` stage; any other `model` value is a local
directory or a Hugging Face id that must already be in the local cache (HF_HUB_OFFLINE=1). The
`base` stage records a real checkpoint's location and its dtype on a GPU (`base.dtype`, set by the
model's preset) in `models/base/checkpoint.json`; `load_base` reads both, so every stage loads the
base model the same way: on the GPU of this process when there is one (under `accelerate launch`,
the process's own `LOCAL_RANK`), in float32 on the CPU.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from mmunlearn.errors import UserError

TINY_PRESETS = ("tiny-llava", "tiny-blip2")
RECORD = "checkpoint.json"


class CheckpointNotFound(UserError):
    pass


def resolve_checkpoint(model: str) -> Path:
    """Local directory of a real checkpoint, without touching the network."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointNotFound(f"model={model!r}: directory has no config.json")
        return path.resolve()
    from huggingface_hub import constants, snapshot_download

    try:
        return Path(snapshot_download(model, local_files_only=True))
    except Exception as err:  # huggingface_hub raises several types for a missing snapshot
        raise CheckpointNotFound(
            f"model={model!r}: not a local directory and not in the Hugging Face cache "
            f"({constants.HF_HUB_CACHE}); download it first (`hf download {model}`) or set `model` "
            f"to a local checkpoint directory [{type(err).__name__}]") from None


def device():
    """Where this process runs models: `cuda:<LOCAL_RANK>` when CUDA is available (one process per
    GPU under `accelerate launch` / torchrun; 0 otherwise), else the CPU."""
    import torch

    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def torch_dtype(name: str | None):
    """The weights' dtype: `name` (params `base.dtype`) on a GPU, float32 on the CPU (half-precision
    matmuls there are slow or missing, and a checkpoint saved in float16 would otherwise load as such)."""
    import torch

    if name is None or device().type != "cuda":
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


def record_checkpoint(out_dir: Path, model_id: str, path: Path, dtype: str) -> None:
    """`checkpoint.json` of the `base` stage for a real checkpoint: where it is and its GPU dtype."""
    (out_dir / RECORD).write_text(json.dumps({"model": model_id, "path": str(path), "dtype": dtype}, indent=2) + "\n")


def base_dtype(base_dir: str | Path) -> str | None:
    """The recorded GPU dtype of the base model (None: a tiny preset, saved in float32)."""
    record = Path(base_dir) / RECORD
    return json.loads(record.read_text()).get("dtype") if record.is_file() else None


def base_source(base_dir: str | Path) -> Path:
    """Where the base model's weights live: the directory itself (tiny presets, saved there) or
    the recorded real checkpoint."""
    base_dir = Path(base_dir)
    if (base_dir / "config.json").is_file():
        return base_dir
    record = base_dir / RECORD
    if not record.is_file():
        raise CheckpointNotFound(f"{base_dir}: no model (run the `base` stage first)")
    return resolve_checkpoint(json.loads(record.read_text())["path"])


def load_vlm(path: str | Path, adapter: str | Path | None = None, merge: bool = False, dtype: str | None = None):
    """(model, processor) via AutoModelForImageTextToText / AutoProcessor, the model on `device()`
    in `torch_dtype(dtype)`; optional peft adapter, merged into the weights when `merge`
    (inference: no LoRA overhead per forward)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(path)
    where = device()  # weights straight onto the GPU (no host copy of a 7B model); the CPU as before
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch_dtype(dtype),
                                                        **({"device_map": where} if where.type == "cuda" else {}))
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
        if merge:
            model = model.merge_and_unload()
    model.eval()
    return model, processor


def load_base(base_dir: str | Path, adapter: str | Path | None = None, merge: bool = False):
    """`load_vlm` of the base model of `base_dir` (the `base` stage's output) in its recorded dtype."""
    return load_vlm(base_source(base_dir), adapter, merge, dtype=base_dtype(base_dir))


def load_checkpoint(base_dir: str | Path, adapter_dir: str | Path):
    """An unlearned (or fine-tuned / oracle) checkpoint ready for inference: base + adapter merged,
    with the neurons listed in `pruned.json` (pruning methods) zeroed."""
    model, processor = load_base(base_dir, adapter_dir, merge=True)
    pruned = Path(adapter_dir) / "pruned.json"
    if pruned.is_file():
        apply_pruning(model, json.loads(pruned.read_text()))
    return model, processor


def install_pruning(model, pruned: dict[str, list[int]]) -> list:
    """Zero the pruned input channels of each MLP output projection during forward passes (MANU's
    pruning while it unlearns; `apply_pruning` bakes the same into a saved checkpoint's weights)."""
    import torch

    from mmunlearn.models.arch import named_modules

    modules = named_modules(model)
    hooks = []
    for name, idx in pruned.items():
        if not idx:
            continue
        keep = torch.ones(modules[name].in_features)
        keep[idx] = 0

        def pre(_m, inputs, keep=keep):
            return (inputs[0] * keep.to(inputs[0].device, inputs[0].dtype),) + tuple(inputs[1:])
        hooks.append(modules[name].register_forward_pre_hook(pre))
    return hooks


def apply_pruning(model, pruned: dict[str, list[int]]) -> None:
    """Zero the pruned columns of a merged model's MLP output weights (same effect as the hooks)."""
    import torch

    from mmunlearn.models.arch import named_modules

    modules = named_modules(model)
    with torch.no_grad():
        for name, idx in pruned.items():
            if idx:
                modules[name].weight[:, idx] = 0
