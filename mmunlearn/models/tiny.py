"""The embedded default: a tiny LLaVA built offline (SPEC section 12).

LlavaForConditionalGeneration from tiny CLIP-vision + Llama configs, a byte-level BPE tokenizer
trained with `tokenizers` on chat-templated strings of the corpus (`<image>` registered as a
special token so BPE never merges repeats), and a PIL CLIP image processor (the default one needs
torchvision). Saved and loaded with save_pretrained / Auto* classes like any real checkpoint.
"""
from __future__ import annotations

from typing import Iterable

import torch

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
PRESETS = {
    "tiny-llava": {
        "image_size": 64, "patch_size": 16, "vocab_size": 1024,
        "vision": {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4},
        "text": {"hidden_size": 192, "intermediate_size": 768, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "num_key_value_heads": 4, "max_position_embeddings": 256},
        "initializer_range": 0.05,
    },
}


def train_tokenizer(corpus: Iterable[str], vocab_size: int):
    """Byte-level BPE (no unknown token possible) wrapped as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", extra_special_tokens={"image_token": IMAGE_TOKEN},
                                   model_max_length=256)


def build_tiny_llava(corpus: Iterable[str], seed: int, preset: str = "tiny-llava"):
    """(model, processor), randomly initialised from `seed`; `corpus` are chat-templated strings."""
    from transformers import (CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration,
                              LlavaProcessor)
    from transformers.models.clip import CLIPImageProcessorPil

    spec = PRESETS[preset]
    tokenizer = train_tokenizer(corpus, spec["vocab_size"])
    size = spec["image_size"]
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
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
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model, processor
