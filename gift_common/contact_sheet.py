"""A grid of images with their captions in one PNG: what a person looks at to judge synthetic images."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont


def contact_sheet(pngs: Sequence[bytes], captions: Sequence[str], *, columns: int = 8, cell: int = 96) -> Image.Image:
    """Images scaled up to ``cell`` pixels (nearest neighbour: tiny images stay crisp), captions under each."""
    font = ImageFont.load_default()
    rows = -(-len(pngs) // columns)
    caption_height = 40
    sheet = Image.new("RGB", (columns * cell, rows * (cell + caption_height)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (png, caption) in enumerate(zip(pngs, captions, strict=True)):
        x, y = (i % columns) * cell, (i // columns) * (cell + caption_height)
        image = Image.open(io.BytesIO(png)).convert("RGB").resize((cell, cell), Image.Resampling.NEAREST)
        sheet.paste(image, (x, y))
        lines = textwrap.wrap(caption, width=max(8, cell // 6))[:3]
        draw.multiline_text((x + 2, y + cell + 1), "\n".join(lines), fill="black", font=font, spacing=1)
    return sheet
