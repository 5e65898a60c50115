"""QA rows -> model inputs: chat-templated prompts, answer labels, per-image processor outputs.

Works through the processor of any checkpoint: image tensors are kept per image as the processor
returns them (LLaVA: stacked pixels; Qwen2-VL: flattened patches + image_grid_thw) and are
concatenated along dim 0 at collate time, so no model-specific layout is assumed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

IGNORE = -100
LETTERS = "ABCD"


def user_text(row: dict) -> str:
    """The question, with lettered options for classification."""
    options = list(row.get("options") if row.get("options") is not None else [])
    if row["form"] == "classification" and options:
        return row["question"] + "\n" + " ".join(f"{LETTERS[i]}) {o}" for i, o in enumerate(options))
    return row["question"]


def user_message(row: dict) -> dict:
    """The chat message of a question: the image (if any), then the question text."""
    has_image = isinstance(row.get("image"), str) and row["image"]
    content = ([{"type": "image"}] if has_image else []) + [{"type": "text", "text": user_text(row)}]
    return {"role": "user", "content": content}


def prompt(processor, row: dict) -> str:
    """The chat-templated prompt; with the tokenizer's template where the processor has none
    (Blip2Processor does not keep a saved template when loaded)."""
    owner = processor if getattr(processor, "chat_template", None) else processor.tokenizer
    return owner.apply_chat_template([user_message(row)], add_generation_prompt=True, tokenize=False)


_SENTINEL = "\x00question\x00"


def prompts(processor, rows: Sequence[dict]) -> list[str]:
    """`prompt` of every row. The template is rendered once per message layout (with or without
    an image) around a placeholder question, and each row's text put in its place, where that
    reproduces `prompt` on the layout's first row and the text has no surrounding whitespace (a
    template may trim it); other rows are rendered one by one."""
    out: list[str | None] = [None] * len(rows)
    layouts: dict[bool, str | None] = {}
    for i, row in enumerate(rows):
        has_image = bool(isinstance(row.get("image"), str) and row["image"])
        text = user_text(row)
        if has_image not in layouts:
            frame = prompt(processor, {"question": _SENTINEL, "form": "", "image": "x" if has_image else None})
            out[i] = prompt(processor, row)
            fits = frame.count(_SENTINEL) == 1 and text.strip() == text and frame.replace(_SENTINEL, text) == out[i]
            layouts[has_image] = frame if fits else None
            continue
        frame = layouts[has_image]
        out[i] = frame.replace(_SENTINEL, text) if frame is not None and text.strip() == text else prompt(processor, row)
    return out  # type: ignore[return-value]


@dataclass
class Encoded:
    """Token ids per sequence (prompt + answer + EOS), prompt lengths, and image references."""

    input_ids: list[list[int]] = field(default_factory=list)
    prompt_len: list[int] = field(default_factory=list)
    image: list[str | None] = field(default_factory=list)
    pixels: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    # token id -> multimodal token type, for processors that return `mm_token_type_ids` (Qwen2-VL's
    # M-RoPE needs them); empty otherwise
    mm_types: dict[int, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.input_ids)

    def take(self, idx: Sequence[int]) -> "Encoded":
        """Sequences `idx` (repeats allowed), sharing this encoding's images."""
        return Encoded(input_ids=[self.input_ids[i] for i in idx], prompt_len=[self.prompt_len[i] for i in idx],
                       image=[self.image[i] for i in idx], pixels=self.pixels, mm_types=self.mm_types)


@dataclass
class ImageCache:
    """Processed images shared by the `encode` calls of one processor (an evaluation encodes the
    forget, retain, probe, relearning, ... rows of the same images): each image's processor
    output and, where the expanded placeholder reproduced the processor's ids, its image-token
    count; prompts on a cached image are tokenized without the image being loaded again."""

    pixels: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    n_tokens: dict[str, int] = field(default_factory=dict)
    mm_types: dict[int, int] = field(default_factory=dict)


def file_images(data_dir: str | Path) -> Callable[[str], Image.Image]:
    root = Path(data_dir)

    def load(name: str) -> Image.Image:
        with Image.open(root / name) as im:
            if im.mode == "RGB":
                im.load()
                return im
            return im.convert("RGB")
    return load


def _split_images(feats: dict, n: int) -> list[dict[str, torch.Tensor]]:
    """Per-image slices of a batched processor output (stacked pixels, or flattened patches
    with `image_grid_thw` as in Qwen2-VL)."""
    extra = {k: v for k, v in feats.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
    if "image_grid_thw" in extra:
        sizes = extra["image_grid_thw"].prod(-1).tolist()
        pix = torch.split(extra["pixel_values"], sizes, dim=0)
        return [{"pixel_values": pix[i], "image_grid_thw": extra["image_grid_thw"][i:i + 1]} for i in range(n)]
    return [{k: v[i:i + 1] for k, v in extra.items()} for i in range(n)]


def _image_placeholder(processor) -> tuple[str, int] | None:
    """The processor's image placeholder token and its id, where it has one."""
    token = getattr(processor, "image_token", None)
    token = getattr(token, "content", token)  # Blip2Processor keeps an AddedToken
    if not isinstance(token, str) or not token:
        return None
    token_id = getattr(processor, "image_token_id", None)
    if token_id is None:
        token_id = processor.tokenizer.convert_tokens_to_ids(token)
    return (token, int(token_id)) if isinstance(token_id, int) else None


def _process(processor, keys: list[str], texts: dict[str, str], refs: dict[str, str], images: Callable,
             out: Encoded, cache: "ImageCache", chunk: int) -> dict[str, list[int]]:
    """Prompt keys through the processor with their images, `chunk` at a time: {key: ids}; each
    image's pixels into `out` and `cache`, multimodal token types into `out`."""
    ids: dict[str, list[int]] = {}
    for s in range(0, len(keys), chunk):
        part = keys[s:s + chunk]
        names = [refs[k] for k in part]
        feats = processor(text=[texts[k] for k in part], images=[images(n) for n in names],
                          return_tensors="pt", padding=True)
        mask = feats["attention_mask"].bool()
        ids.update((k, feats["input_ids"][j][mask[j]].tolist()) for j, k in enumerate(part))
        if "mm_token_type_ids" in feats:
            typed = mask & (feats["mm_token_type_ids"] != 0)
            out.mm_types.update(zip(feats["input_ids"][typed].tolist(), feats["mm_token_type_ids"][typed].tolist()))
        for name, pix in zip(names, _split_images(feats, len(part))):
            out.pixels.setdefault(name, pix)
            cache.pixels.setdefault(name, pix)
    return ids


def _expanded(processor, leads: list[str], rest: list[str], texts: dict[str, str], refs: dict[str, str],
              ids: dict[str, list[int]], cache: "ImageCache") -> dict[str, list[int]]:
    """Ids of the `rest` prompts, tokenized with their image's placeholder expanded as the processor
    did, for images where that expansion reproduces the processor's ids of the image's first
    prompt (`leads`, already in `ids`; images checked by an earlier call are in `cache`). The
    processor expands one placeholder into one token per image feature (LLaVA, Qwen2-VL), or
    prepends them to a prompt without one (BLIP-2: one per query)."""
    placeholder = _image_placeholder(processor)
    if placeholder is None:
        return {}
    token, token_id = placeholder
    tok = processor.tokenizer
    n_tokens = {**cache.n_tokens, **{refs[k]: ids[k].count(token_id) for k in leads}}

    def expand(k: str) -> str | None:
        text, n = texts[k], n_tokens[refs[k]]
        if n and text.count(token) == 1:
            return text.replace(token, token * n)
        return token * n + text if n and not text.count(token) else None

    check = [k for k in leads if expand(k) is not None]
    got = tok([expand(k) for k in check])["input_ids"] if check else []
    cache.n_tokens.update((refs[k], n_tokens[refs[k]]) for k, g in zip(check, got) if list(g) == ids[k])
    fast = [k for k in rest if refs[k] in cache.n_tokens and expand(k) is not None]
    return dict(zip(fast, map(list, tok([expand(k) for k in fast])["input_ids"]))) if fast else {}


def encode(processor, rows: Sequence[dict], images: Callable[[str], Image.Image],
           answers: Sequence[str] | None = None, chunk: int = 32, cache: ImageCache | None = None) -> Encoded:
    """Encode rows; `answers` overrides the target text (e.g. one row per classification option,
    or refusals for PO). Prompts go through the processor in batches; each distinct image is
    loaded and processed once: further prompts on an image already processed are tokenized with
    its placeholder expanded as the processor did (`_expanded`, checked against the processor's
    own ids for that image; prompts where the check fails go through the processor). With a
    `cache` (made for this processor) images checked by an earlier call are not processed again."""
    tok = processor.tokenizer
    cache = cache if cache is not None else ImageCache()
    out = Encoded()
    row_texts = prompts(processor, rows)
    row_refs = [row.get("image") if isinstance(row.get("image"), str) and row.get("image") else None for row in rows]
    keys = [f"{img}\0{text}" for img, text in zip(row_refs, row_texts)]
    texts, refs = dict(zip(keys, row_texts)), dict(zip(keys, row_refs))
    todo = list(dict.fromkeys(keys))
    plain = [k for k in todo if refs[k] is None]
    # special tokens as the processor adds them to the image prompts (Llama's BOS; none for the tiny BPE)
    ids = dict(zip(plain, tok([texts[k] for k in plain])["input_ids"])) if plain else {}
    visual = [k for k in todo if refs[k] is not None]
    lead: dict[str, str] = {}  # image -> its first prompt key (goes through the processor)
    for k in visual:
        if refs[k] not in cache.n_tokens:
            lead.setdefault(refs[k], k)
    ids.update(_process(processor, list(lead.values()), texts, refs, images, out, cache, chunk))
    rest = [k for k in visual if lead.get(refs[k]) != k]
    ids.update(_expanded(processor, list(lead.values()), rest, texts, refs, ids, cache))
    ids.update(_process(processor, [k for k in rest if k not in ids], texts, refs, images, out, cache, chunk))
    for name in {r for r in row_refs if r is not None}:
        out.pixels.setdefault(name, cache.pixels[name])
    cache.mm_types.update(out.mm_types)
    out.mm_types.update(cache.mm_types)
    out.prompt_len = [len(ids[k]) for k in keys]
    out.image = row_refs
    out.input_ids = [ids[k] for k in keys]
    return retarget(out, tok, [answers[i] if answers is not None else row["answer"] for i, row in enumerate(rows)])


def repeat(enc: Encoded, idx: Sequence[int], tok, answers: Sequence[str]) -> Encoded:
    """Sequences `idx` of `enc` (repeats allowed) with new target answers, e.g. one per option."""
    return retarget(enc.take(idx), tok, answers)


def retarget(enc: Encoded, tok, answers: Sequence[str]) -> Encoded:
    """The same prompts (and images) with new target answers, e.g. refusals or random labels."""
    target_ids = tok([" " + str(a) for a in answers], add_special_tokens=False)["input_ids"]
    return Encoded(input_ids=[ids[:n] + tgt + [tok.eos_token_id]
                              for ids, n, tgt in zip(enc.input_ids, enc.prompt_len, target_ids)],
                   prompt_len=list(enc.prompt_len), image=list(enc.image), pixels=enc.pixels,
                   mm_types=dict(enc.mm_types))


def collate(enc: Encoded, idx: Sequence[int], pad_id: int, side: str = "left",
            with_answer: bool = True) -> dict[str, torch.Tensor]:
    """Padded batch of sequences `idx`; labels are -100 outside the answer. Left padding (the
    default) puts every answer at the end, which scoring relies on. With `with_answer=False` only
    prompts are batched (for generation)."""
    seqs = [enc.input_ids[i] if with_answer else enc.input_ids[i][: enc.prompt_len[i]] for i in idx]
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    labels = np.full((len(seqs), width), IGNORE, dtype=np.int64)
    for r, (i, s) in enumerate(zip(idx, seqs)):
        off = width - len(s) if side == "left" else 0
        ids[r, off:off + len(s)] = s
        mask[r, off:off + len(s)] = 1
        if with_answer:
            labels[r, off + enc.prompt_len[i]: off + len(s)] = s[enc.prompt_len[i]:]
    ids, mask, labels = torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(labels)
    batch = {"input_ids": ids, "attention_mask": mask}
    if enc.mm_types:
        types = torch.zeros_like(ids)
        for token_id, kind in enc.mm_types.items():
            types[(ids == token_id) & mask.bool()] = kind
        batch["mm_token_type_ids"] = types
    if with_answer:
        batch["labels"] = labels
    imgs = [enc.image[i] for i in idx if enc.image[i] is not None]
    if imgs:
        keys = enc.pixels[imgs[0]].keys()
        for k in keys:
            batch[k] = torch.cat([enc.pixels[name][k] for name in imgs], dim=0)
    return batch
