"""The embedded tiny presets, built offline (SPEC section 12).

`tiny-llava` (the default): LlavaForConditionalGeneration from tiny CLIP-vision + Llama configs.
`tiny-blip2` (the cross-architecture branch): Blip2ForConditionalGeneration from tiny BLIP-2
vision + Q-Former configs and the same Llama text config: the image reaches the language model as
a fixed number of learned Q-Former queries instead of one projected token per patch.
Both: a byte-level BPE tokenizer trained with `tokenizers` on chat-templated strings of the corpus
(`<image>` registered as a special token so BPE never merges repeats) and a PIL image processor
(the default ones need torchvision). Saved and loaded with save_pretrained / Auto* classes like any
real checkpoint.
"""
from __future__ import annotations

from typing import Iterable

import torch
from PIL import Image

IMAGE_TOKEN = "<image>"
SPECIALS = ["<pad>", "<s>", "</s>", IMAGE_TOKEN]
# LLaVA-1.5 conversation format; `{{ '\n' }}` because HF renders templates with trim_blocks.
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: "
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{{ '\n' }}"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{{ '\n' }}"
    "{% else %}ASSISTANT: {% for c in m['content'] %}{{ c['text'] }}{% endfor %}</s>"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
# BLIP-2's VQA prompt format. No image placeholder in the text: Blip2Processor prepends
# `num_query_tokens` image tokens to the prompt of a row with an image.
BLIP2_CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}Question: "
    "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{% else %} Answer: {% for c in m['content'] %}{{ c['text'] }}{% endfor %}</s>"
    "{% endif %}{% endfor %}{% if add_generation_prompt %} Answer:{% endif %}"
)
# The documents (data.image_size, 256 px by default) shrink to the presets' 64 px by an integer
# factor: area averaging (PIL's box filter) is the exact anti-aliased reduction there, and it is
# 3x cheaper than bicubic, which every evaluation pays once per image.
DOWNSCALE = int(Image.Resampling.BOX)
PRESETS = {
    "tiny-llava": {
        "image_size": 64, "patch_size": 16, "vocab_size": 1024,
        "vision": {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4},
        "text": {"hidden_size": 192, "intermediate_size": 768, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "num_key_value_heads": 4, "max_position_embeddings": 256},
        "initializer_range": 0.05,
    },
    "tiny-blip2": {
        "image_size": 64, "patch_size": 16, "vocab_size": 1024, "num_query_tokens": 16,
        "vision": {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4},
        "qformer": {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 1, "num_attention_heads": 4,
                    "cross_attention_frequency": 1},
        "text": {"hidden_size": 192, "intermediate_size": 768, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "num_key_value_heads": 4, "max_position_embeddings": 256},
        "initializer_range": 0.05,
    },
}


def chat_template(preset: str) -> str:
    return BLIP2_CHAT_TEMPLATE if preset == "tiny-blip2" else CHAT_TEMPLATE


def train_tokenizer(corpus: Iterable[str], vocab_size: int, image_token_attribute: bool = True):
    """Byte-level BPE (no unknown token possible) wrapped as a PreTrainedTokenizerFast.
    `image_token_attribute=False` leaves `<image>` a plain special token without the tokenizer's
    `image_token` attribute (Blip2Processor needs an AddedToken there and registers it itself)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    extra = {"extra_special_tokens": {"image_token": IMAGE_TOKEN}} if image_token_attribute else {}
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", model_max_length=256, **extra)


def build_tiny_llava(corpus: Iterable[str], seed: int, preset: str = "tiny-llava"):
    """(model, processor), randomly initialised from `seed`; `corpus` are chat-templated strings."""
    from transformers import (CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration,
                              LlavaProcessor)
    from transformers.models.clip import CLIPImageProcessorPil

    spec = PRESETS[preset]
    tokenizer = train_tokenizer(corpus, spec["vocab_size"])
    size = spec["image_size"]
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                            resample=DOWNSCALE)
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=spec["patch_size"],
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=CHAT_TEMPLATE)
    vision = CLIPVisionConfig(image_size=size, patch_size=spec["patch_size"], projection_dim=spec["vision"]["hidden_size"],
                              initializer_range=spec["initializer_range"], **spec["vision"])
    text = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       initializer_range=spec["initializer_range"], tie_word_embeddings=False, **spec["text"])
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                         image_seq_length=(size // spec["patch_size"]) ** 2,
                         vision_feature_select_strategy="default", vision_feature_layer=-2)
    config.initializer_range = spec["initializer_range"]
    return _instantiate(LlavaForConditionalGeneration, config, tokenizer, seed), processor


def _instantiate(model_class, config, tokenizer, seed: int):
    """The model with weights drawn from `seed`, generating with the tokenizer's special tokens."""
    torch.manual_seed(seed)
    model = model_class(config)
    for name in ("pad_token_id", "eos_token_id", "bos_token_id"):
        setattr(model.generation_config, name, getattr(tokenizer, name))
    return model


def build_tiny_blip2(corpus: Iterable[str], seed: int, preset: str = "tiny-blip2"):
    """(model, processor), randomly initialised from `seed`; `corpus` are chat-templated strings.
    The chat template is set on the tokenizer too: Blip2Processor drops the saved one on load, and
    `encode.prompt` falls back to the tokenizer's."""
    from transformers import (Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, Blip2QFormerConfig,
                              Blip2VisionConfig, LlamaConfig)
    from transformers.models.blip import BlipImageProcessorPil

    spec = PRESETS[preset]
    init = spec["initializer_range"]
    tokenizer = train_tokenizer(corpus, spec["vocab_size"], image_token_attribute=False)
    tokenizer.chat_template = BLIP2_CHAT_TEMPLATE
    size = spec["image_size"]
    processor = Blip2Processor(image_processor=BlipImageProcessorPil(size={"height": size, "width": size},
                                                                     resample=DOWNSCALE),
                               tokenizer=tokenizer, num_query_tokens=spec["num_query_tokens"])
    processor.chat_template = BLIP2_CHAT_TEMPLATE
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if image_token_id != SPECIALS.index(IMAGE_TOKEN):
        raise RuntimeError("Blip2Processor added an image token instead of reusing the trained one")
    vision = Blip2VisionConfig(image_size=size, patch_size=spec["patch_size"], initializer_range=init, **spec["vision"])
    # no dropout anywhere, as in the tiny LLaVA
    qformer = Blip2QFormerConfig(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=init,
                                 **spec["qformer"])
    text = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       initializer_range=init, tie_word_embeddings=False, **spec["text"])
    config = Blip2Config(vision_config=vision, qformer_config=qformer, text_config=text,
                         num_query_tokens=spec["num_query_tokens"], image_token_index=image_token_id,
                         initializer_range=init)
    return _instantiate(Blip2ForConditionalGeneration, config, tokenizer, seed), processor


def build_tiny(corpus: Iterable[str], seed: int, preset: str):
    """(model, processor) of a tiny preset (`PRESETS`)."""
    if preset == "tiny-blip2":
        return build_tiny_blip2(corpus, seed, preset)
    return build_tiny_llava(corpus, seed, preset)
