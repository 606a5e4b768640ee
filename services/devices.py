"""Which torch device a process computes on, from a setting (the worker's GIFT_DEVICE and the trainer's `device`),
and that device in words for the reports of what was measured on it."""

from __future__ import annotations

import os
import platform
from pathlib import Path

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


def describe(device: torch.device) -> str:
    """The machine a figure was measured on: the same 2-core VM class took 2 min 10 s for a ViT-B/16 evaluation one
    day and 7 min 35 s the next, on another CPU, so a figure that does not name its CPU cannot be compared."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    fields = _cpuinfo()
    flags = set(fields.get("flags", "").split())
    vectors = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    model = fields.get("model name") or platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} cores, {vectors}, torch {torch.__version__}"


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none, as on macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    first = text.split("\n\n")[0]
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in first.splitlines())}
