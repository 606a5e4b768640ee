"""The tiny CLIP's files where the package is installed: what a run config's `model: {shipped: tinyworld}` names
(entry point gift.clip_models). Kept apart from clip.py so that checking a config loads no torch."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def clip_files() -> tuple[Path, Path]:
    """(open_clip architecture JSON, pre-trained weights) of the tiny CLIP."""
    return PACKAGE / "tiny-clip.json", PACKAGE / "weights" / "tiny-clip.pt"
