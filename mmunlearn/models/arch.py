"""What differs between VLM architectures, behind a few helpers, so the rest of the library calls
every model the same way:

- `model_parts`: the vision / projector / language parts of a model by module name (LLaVA:
  vision_tower, multi_modal_projector, language_model + lm_head; BLIP-2: vision_model,
  query_tokens + qformer + language_projection, language_model; Qwen2-VL: visual, -, language_model).
- `named_modules` / `on_model_path`: modules by name with or without a peft wrapper, and whether
  one feeds the output at all (LLaVA's vision layers after `vision_feature_layer` do not).
- `language_hidden_states`: the language model's hidden states of a forward output (BLIP-2 nests
  them in `language_model_outputs`).
- `no_image_inputs` / `generate`: a batch without images on a model whose forward always runs the
  vision side (BLIP-2: `pixel_values` is required) gets the features of zero images, and is decoded
  by the language model alone (what the full model computes when no image token is present).
"""
from __future__ import annotations

import inspect
import re
import weakref

import torch

from mmunlearn.errors import UserError

PART_NAMES = {
    "vision": ("vision_tower", "vision_model", "visual"),
    "projector": ("multi_modal_projector", "query_tokens", "qformer", "language_projection"),
    "language": ("language_model", "lm_head"),
}


LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
PEFT_PREFIX = "base_model.model."


class UnsupportedModel(UserError):
    pass


def unwrap(model):
    """The transformers model under DDP / peft wrappers (peft forwards keyword arguments to it)."""
    model = getattr(model, "module", model)
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def model_type(model) -> str:
    inner = unwrap(model)
    return getattr(getattr(inner, "config", None), "model_type", None) or type(inner).__name__


def model_parts(model) -> dict[str, list[str]]:
    """{part: names of its outermost modules / parameters}, relative to the transformers model (the
    same with or without a peft wrapper); a part the model lacks is an empty list."""
    inner = unwrap(model)
    found: dict[str, list[str]] = {part: [] for part in PART_NAMES}
    owner = {name: part for part, names in PART_NAMES.items() for name in names}
    named = [n for n, _ in inner.named_modules() if n] + [n for n, _ in inner.named_parameters()]
    for name in named:
        part = owner.get(name.rsplit(".", 1)[-1])
        if part is None or any(name.startswith(n + ".") for names in found.values() for n in names):
            continue
        if name not in found[part]:
            found[part].append(name)
    return found


def require_parts(model, method: str, parts: tuple[str, ...]) -> dict[str, list[str]]:
    """`model_parts`, or a clear error naming the method and the model when one of `parts` is missing."""
    found = model_parts(model)
    missing = [p for p in parts if not found[p]]
    if missing:
        raise UnsupportedModel(
            f"method {method!r} needs the {' and '.join(parts)} parts of the model; model type "
            f"{model_type(model)!r} has no {' / '.join(missing)} part (module names looked for: "
            + "; ".join(f"{p}: {', '.join(PART_NAMES[p])}" for p in missing) + ")")
    return found


def in_part(name: str, roots: list[str]) -> bool:
    return any(name == r or name.startswith(r + ".") for r in roots)


def vision_layers_used(model) -> int | None:
    """How many vision encoder layers feed the output, where the config says so: LLaVA-style models
    read the image features from hidden state `vision_feature_layer` (one index or a list; state 0
    = the embeddings, state i = the output of layer i - 1), so with LLaVA's -2 the last layer's
    output is never read and its neurons cannot matter. None = every layer (BLIP-2, Qwen2-VL)."""
    config = getattr(unwrap(model), "config", None)
    feature = getattr(config, "vision_feature_layer", None)
    if feature is None:
        return None
    states = int(config.vision_config.num_hidden_layers) + 1
    return max(int(i) % states for i in ([feature] if isinstance(feature, int) else feature))


def layer_index(name: str) -> int | None:
    """The encoder layer of a module name (`...layers.<i>....`), None for a name outside layers."""
    found = LAYER.search(name)
    return int(found.group(1)) if found else None


def named_modules(model) -> dict[str, torch.nn.Module]:
    """Modules by name in the underlying transformers model (peft prefix removed)."""
    return {n.removeprefix(PEFT_PREFIX): m for n, m in model.named_modules()}


def on_model_path(model, name: str) -> bool:
    """Whether module `name` (`named_modules` naming) can change the output: False only for a vision
    layer at or after `vision_layers_used` (LLaVA-style configs); True for everything else."""
    used, layer = vision_layers_used(model), layer_index(name)
    return used is None or layer is None or layer < used or not in_part(name, model_parts(model)["vision"])


def language_hidden_states(out):
    """Hidden states of the language model (embeddings + one per layer) in a forward output."""
    hs = getattr(out, "hidden_states", None)
    if hs is None:
        hs = getattr(getattr(out, "language_model_outputs", None), "hidden_states", None)
    if hs is None:
        raise AttributeError(f"{type(out).__name__} carries no language-model hidden states")
    return hs


_NEEDS: dict[type, bool] = {}


def needs_image_features(model) -> bool:
    """Whether the model's forward cannot run without images: `pixel_values` is a required
    argument, and precomputed features (`mm_encoder_outputs`) are the way around it."""
    cls = type(unwrap(model))
    if cls not in _NEEDS:
        try:
            params = inspect.signature(cls.forward).parameters
        except (TypeError, ValueError):
            params = {}
        pixels = params.get("pixel_values")
        _NEEDS[cls] = bool(pixels is not None and pixels.default is inspect.Parameter.empty
                           and "mm_encoder_outputs" in params)
    return _NEEDS[cls]


_EMPTY: "weakref.WeakKeyDictionary[torch.nn.Module, type]" = weakref.WeakKeyDictionary()


def no_image_inputs(model) -> dict:
    """Extra inputs of a batch without images: {} for most models; for a model that needs image
    features, `pixel_values=None` and the features of zero images as `mm_encoder_outputs`, in the
    output type of its `get_image_features` (learnt once from one blank image). The image-token
    mask is then empty: the forward pass is the language model's alone."""
    if not needs_image_features(model):
        return {}
    inner = unwrap(model)
    param = next(inner.parameters())
    if inner not in _EMPTY:
        vision = inner.config.vision_config
        size = vision.image_size if isinstance(vision.image_size, (list, tuple)) else (vision.image_size,) * 2
        blank = torch.zeros((1, getattr(vision, "num_channels", 3), *size), dtype=param.dtype, device=param.device)
        with torch.no_grad():
            _EMPTY[inner] = type(inner.get_image_features(pixel_values=blank, return_dict=True))
    empty = torch.zeros((0, inner.config.text_config.hidden_size), dtype=param.dtype, device=param.device)
    return {"pixel_values": None, "mm_encoder_outputs": {"image": _EMPTY[inner](pooler_output=empty)}}


def generate(model, inputs: dict, **kwargs) -> torch.Tensor:
    """`model.generate(**inputs, **kwargs)`; a batch without images on a model that needs image
    features is decoded by its language model (whose output also starts with the prompt ids)."""
    if "pixel_values" in inputs or not needs_image_features(model):
        return model.generate(**inputs, **kwargs)
    language = getattr(unwrap(model), "language_model", None)
    if language is None or not callable(getattr(language, "generate", None)):
        raise UnsupportedModel(f"model type {model_type(model)!r}: cannot generate without an image")
    return language.generate(**inputs, **kwargs)
