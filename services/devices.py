"""Which torch device a process computes on, from a setting: the worker's GIFT_DEVICE and the trainer's `device`."""

from __future__ import annotations

import torch

from gift_common.errors import UserError


def resolve_device(setting: str, index: int = 0) -> torch.device:
    """'auto' is CUDA if there is one, else CPU; a bare 'cuda' is GPU `index` (a torchrun process's local rank)."""
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda":
        setting = f"cuda:{index}"
    try:
        return torch.device(setting)
    except RuntimeError:
        raise UserError(f"device {setting!r}: expected auto, cpu, cuda, cuda:N or another torch device") from None
