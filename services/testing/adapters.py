"""Tiny LoRA adapters for the generator's tests and benchmarks, made as users make theirs: ``peft`` layers on a
UNet's attention projections, saved in diffusers' format with safetensors; and files that must be refused."""

from __future__ import annotations

import copy
import io
import tempfile
from pathlib import Path
from typing import Any

import torch

ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")
DOWN = (".lora_A.weight", ".lora.down.weight")  # a LoRA layer's first half, under PEFT's and diffusers' names


def lora_file(unet: Any, *, rank: int = 4, seed: int = 0, std: float = 0.3) -> bytes:
    """A rank-``rank`` LoRA of ``unet``'s attention layers as a diffusers ``.safetensors`` file; its up weights are
    random (``seed``), not PEFT's zeros, so that it changes the images."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict

    adapted = copy.deepcopy(unet)
    adapted.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=ATTENTION))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in adapted.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(adapted))
    with tempfile.TemporaryDirectory() as directory:
        StableDiffusionPipeline.save_lora_weights(directory, unet_lora_layers=layers, safe_serialization=True)
        return (Path(directory) / "pytorch_lora_weights.safetensors").read_bytes()


def renamed(data: bytes, old: str, new: str) -> bytes:
    """The same file with ``old`` replaced by ``new`` in every key (a layer another model has, or none has)."""
    from safetensors.torch import load, save

    return save({key.replace(old, new): value for key, value in load(data).items()})


def reshaped(data: bytes, grow_rank: int = 0, transpose: bool = False) -> bytes:
    """The same layers with other shapes: every rank grown by ``grow_rank``, or the down weights transposed."""
    from safetensors.torch import load, save

    changed = {}
    for key, value in load(data).items():
        down = key.endswith(DOWN)
        if grow_rank and down:
            value = torch.cat([value, value[:1].repeat(grow_rank, 1)])
        elif grow_rank:
            value = torch.cat([value, value[:, :1].repeat(1, grow_rank)], dim=1)
        elif transpose and down:
            value = value.T.contiguous()
        changed[key] = value
    return save(changed)


def pickled(data: bytes) -> bytes:
    """The same tensors as torch.save writes them: a pickle, which the service must refuse unread."""
    from safetensors.torch import load

    buffer = io.BytesIO()
    torch.save(load(data), buffer)
    return buffer.getvalue()
