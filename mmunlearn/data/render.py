"""Document images: a saturated identicon as identity cue plus the profile's fields in boxes.

Each profile yields the full document, one variant per maskable field (that field's box blacked
out) and one fully masked variant. Rendering runs in a process pool (PIL releases no GIL here).
"""
from __future__ import annotations

import colorsys
import multiprocessing as mp
import os
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from mmunlearn.data.schema import ALL, FIELDS, FULL, MASKABLE, TITLE, Layout, image_name

HEADER = {"medical": (20, 60, 140), "labor": (40, 110, 50)}
BLACK = (0, 0, 0)
WHITE = (255, 255, 255)


@lru_cache(maxsize=8)
def _font(px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=max(px, 4))


def cue_color(code: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(((code >> 15) & 0xF) / 16, 1.0, 0.85)
    return (round(r * 255), round(g * 255), round(b * 255))


def draw_identicon(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], code: int) -> None:
    """Mirrored 5x5 identicon filling `box`; 15 low bits = left 3 columns, next 4 bits = hue."""
    x0, y0, x1, y1 = box
    draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=(245, 245, 245))
    color = cue_color(code)
    for r in range(5):
        for c in range(3):
            if code >> (r * 3 + c) & 1:
                for cc in {c, 4 - c}:
                    draw.rectangle(
                        (x0 + cc * (x1 - x0) // 5, y0 + r * (y1 - y0) // 5,
                         x0 + (cc + 1) * (x1 - x0) // 5 - 1, y0 + (r + 1) * (y1 - y0) // 5 - 1),
                        fill=color,
                    )


def render_document(profile: dict, size: int) -> Image.Image:
    domain = profile["domain"]
    lay = Layout(size, domain)
    img = Image.new("RGB", (size, size), WHITE)
    draw = ImageDraw.Draw(img)
    hx0, hy0, hx1, hy1 = lay.header
    draw.rectangle((hx0, hy0, hx1 - 1, hy1 - 1), fill=HEADER[domain])
    draw.text((2, hy0), TITLE[domain], fill=WHITE, font=_font(hy1 - hy0 - 1))
    draw_identicon(draw, lay.cue, int(profile["cue"]))
    for field in FIELDS[domain]:
        x0, y0, x1, y1 = lay.field_box(field)
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=WHITE, outline=(200, 200, 200))
        draw.text((x0 + 1, y0), str(profile[field]), fill=BLACK, font=_font(y1 - y0 - 1))
    return img


def mask(img: Image.Image, domain: str, fields) -> Image.Image:
    out = img.copy()
    draw = ImageDraw.Draw(out)
    lay = Layout(img.width, domain)
    for field in fields:
        x0, y0, x1, y1 = lay.field_box(field)
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=BLACK)
    return out


def variants(profile: dict) -> list[str]:
    """Variant names of a profile's images, in listing order."""
    return [FULL, *MASKABLE[profile["domain"]], ALL]


def render_profile(profile: dict, size: int, out_dir: Path) -> list[str]:
    """Write all image variants of one profile into out_dir; return their names relative to data/."""
    full = render_document(profile, size)
    names = []
    for variant in variants(profile):
        if variant == FULL:
            img = full
        else:
            img = mask(full, profile["domain"], MASKABLE[profile["domain"]] if variant == ALL else [variant])
        name = image_name(profile["profile_id"], variant)
        # zlib level 1: documents are mostly flat colour, so the files are ~8% larger than at level
        # 6 but every later stage decodes them ~30% faster (and rendering is faster too)
        img.save(out_dir / Path(name).name, format="PNG", compress_level=1)
        names.append(name)
    return names


def _render_chunk(args: tuple[list[dict], int, str]) -> list[list[str]]:
    profiles, size, out_dir = args
    return [render_profile(p, size, Path(out_dir)) for p in profiles]


def render_all(profiles: list[dict], size: int, out_dir: Path, workers: int = 0,
               progress: bool = False) -> list[list[str]]:
    """Render every profile into out_dir with `workers` processes (0 = one per core)."""
    workers = workers or os.cpu_count() or 1
    chunk = 25
    jobs = [(profiles[i:i + chunk], size, str(out_dir)) for i in range(0, len(profiles), chunk)]

    def collect(parts) -> list[list[str]]:
        if progress:
            from tqdm import tqdm

            parts = tqdm(parts, total=len(jobs), desc="render", unit="chunk", mininterval=1.0)
        return [names for part in parts for names in part]

    if workers == 1 or len(jobs) == 1:
        return collect(map(_render_chunk, jobs))
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(min(workers, len(jobs))) as pool:
        return collect(pool.imap(_render_chunk, jobs))
