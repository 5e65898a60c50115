"""LLaVA-1.5 built offline at any size: the real architecture (transformers' LlavaConfig with a
CLIP ViT vision config and a Llama text config, the real module names, 336 px images in 14 px
patches = 576 image tokens per image, `vision_feature_layer` -2, select strategy "default", GELU
projector) with random weights, a processor like llava-hf's (LlavaProcessor, CLIP preprocessing,
the llava-hf chat template) and a byte-level BPE tokenizer that, like Llama's, prepends BOS.

`SEVEN_B` is llava-hf/llava-1.5-7b-hf's configuration exactly (CLIP ViT-L/14-336 + Llama-2-7B,
vocabulary 32064), for `benchmarks/gpu.py`; `SMALL` keeps every structural choice, 336 px images
included, at a width and depth that trains on two CPU cores (tests/test_real_checkpoint.py runs
the whole pipeline on it); `DRY_RUN` is smaller still (56 px) for `gpu.py --dry-run`.
Token ids (image, pad, BOS, EOS) are the trained tokenizer's, not Llama's.
"""
from __future__ import annotations

from pathlib import Path

# llava-hf/llava-1.5-7b-hf
SEVEN_B = {
    "vision": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
               "projection_dim": 768, "hidden_act": "quick_gelu"},
    "text": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
             "num_key_value_heads": 32, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5},
    "vocab_size": 32064, "tokenizer_vocab": 4096, "image_size": 336,
}
# the same structure at a width and depth two CPU cores train in minutes
SMALL = {
    "vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
               "projection_dim": 32, "hidden_act": "quick_gelu"},
    "text": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
             "num_key_value_heads": 2, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5},
    "vocab_size": None, "tokenizer_vocab": 1024, "image_size": 336,   # vocab None: the tokenizer's, rounded up to 64
}
# benchmarks/gpu.py --dry-run: the smallest of the kind (56 px: 16 image tokens), seconds on a CPU
DRY_RUN = {**SMALL, "vision": {**SMALL["vision"], "hidden_size": 16, "intermediate_size": 32},
           "text": {**SMALL["text"], "hidden_size": 32, "intermediate_size": 64}, "image_size": 56}
PATCH_SIZE = 14
# llava-hf/llava-1.5-7b-hf's chat template ("USER: <image>\n... ASSISTANT:")
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% if message['role'] != 'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', "
    "'text') %}{{ content['text'] + ' '}}{% endfor %}{% else %}{% for content in message['content'] | "
    "selectattr('type', 'equalto', 'text') %}{% generation %}{{ content['text'] + ' '}}{% endgeneration %}"
    "{% endfor %}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def corpus(seed: int = 0, per_domain: int = 10) -> list[str]:
    """Chat-templated QA strings of generated (public) profiles: the tokenizer's training text."""
    from mmunlearn.data.profiles import generate_profiles
    from mmunlearn.data.qa import build_qa
    from mmunlearn.models.base import chat_corpus

    profiles = generate_profiles(per_domain, seed, prefix="tok")
    profiles["split"], profiles["task"] = "public", 0
    return chat_corpus(build_qa(profiles, seed).to_dict("records"))


def tokenizer(texts: list[str], vocab: int):
    """Byte-level BPE (`<image>` special) whose post-processor prepends BOS, as Llama's does."""
    from tokenizers.processors import TemplateProcessing

    from mmunlearn.models.tiny import train_tokenizer

    tok = train_tokenizer(texts, vocab)
    bos = tok.bos_token_id
    tok.backend_tokenizer.post_processor = TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                              special_tokens=[("<s>", bos)])
    tok.model_max_length = 4096
    return tok


def processor(tok, size: int = 336):
    """LlavaProcessor as llava-hf ships it: CLIP preprocessing at `size` px (bicubic, center crop,
    CLIP mean / std; the PIL backend, no torchvision): at 336 px, 576 image tokens per image."""
    from transformers import LlavaProcessor
    from transformers.models.clip import CLIPImageProcessorPil

    images = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size}, resample=3)
    return LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=PATCH_SIZE,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=CHAT_TEMPLATE)


def config(spec: dict, tok):
    """LlavaConfig of `spec` (SEVEN_B or SMALL) with the tokenizer's special token ids."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vocab = spec["vocab_size"] or -(-len(tok) // 64) * 64
    if vocab < len(tok):
        raise ValueError(f"vocab_size {vocab} < tokenizer size {len(tok)}")
    size = spec["image_size"]
    vision = CLIPVisionConfig(image_size=size, patch_size=PATCH_SIZE, **spec["vision"])
    text = LlamaConfig(vocab_size=vocab, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id, tie_word_embeddings=False, **spec["text"])
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
                       projector_hidden_act="gelu", vision_feature_layer=-2, vision_feature_select_strategy="default",
                       image_seq_length=(size // PATCH_SIZE) ** 2)


def build(spec: dict, seed: int = 0, dtype=None, device=None):
    """(model, processor): LLaVA-1.5 of `spec` with random weights drawn from `seed`, created in
    `dtype` directly on `device` (a 7B model never passes through float32 or host memory)."""
    import torch
    from transformers import LlavaForConditionalGeneration

    tok = tokenizer(corpus(seed), spec["tokenizer_vocab"])
    proc = processor(tok, spec["image_size"])
    torch.manual_seed(seed)
    with torch.device(device or "cpu"):
        model = LlavaForConditionalGeneration._from_config(config(spec, tok), dtype=dtype or torch.float32)
    for name in ("pad_token_id", "eos_token_id", "bos_token_id"):
        setattr(model.generation_config, name, getattr(tok, name))
    return model.eval(), proc


def save(out_dir: str | Path, spec: dict = SMALL, seed: int = 0) -> Path:
    """A checkpoint directory (save_pretrained of model and processor) that `model:` can name."""
    model, proc = build(spec, seed)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    proc.save_pretrained(out_dir)
    return out_dir
