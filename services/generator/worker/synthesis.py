"""Diffusers pipelines, loaded once from local directories, turned into PNG bytes.

An image depends only on its own prompt, negative prompt and seed: each gets its own CPU ``torch.Generator``
(CPU so that a seed means the same noise on every device), whatever else shares its pipeline call.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gift_common.errors import UserError
from gift_common.manifest import verify as verify_manifest

log = logging.getLogger("gift.worker")


class ModelDirectoryError(UserError):
    """A --model directory that is not a diffusers pipeline; the message says what to put where."""


class Interrupted(Exception):
    """A pipeline call cut short between denoising steps: nobody wants its images any more."""


@dataclass
class LoadedModel:
    name: str
    directory: Path
    pipeline: object  # a diffusers DiffusionPipeline
    fingerprint: str
    height: int
    width: int


def fingerprint(directory: Path) -> str:
    """SHA-256 over every file's relative path and bytes: the model's identity in the image cache."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and ".cache" not in p.parts):
        digest.update(str(path.relative_to(directory)).encode() + b"\0")
        with path.open("rb") as file:
            for block in iter(lambda f=file: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def load_model(name: str, directory: Path, device: torch.device) -> LoadedModel:
    from diffusers import DiffusionPipeline

    if not (directory / "model_index.json").is_file():
        raise ModelDirectoryError(
            f"model {name!r}: {directory} is not a diffusers pipeline directory (no model_index.json). "
            "Put there a pipeline saved with save_pretrained, e.g. a local copy of stable-diffusion-v1-5."
        )
    verify_manifest(directory)  # shipped weights: a damaged file is an error, not a model that draws garbage
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    pipeline = DiffusionPipeline.from_pretrained(directory, local_files_only=True, dtype=dtype)
    pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    height, width = native_size(pipeline)
    model = LoadedModel(name, directory, pipeline, fingerprint(directory), height, width)
    log.info("loaded model %s from %s on %s: %dx%d, fingerprint %s", name, directory, device, width, height,
             model.fingerprint[:12])  # fmt: skip
    return model


def native_size(pipeline: object) -> tuple[int, int]:
    denoiser = getattr(pipeline, "unet", None) or pipeline.transformer
    size = denoiser.config.sample_size
    height, width = (size, size) if isinstance(size, int) else size
    scale = pipeline.vae_scale_factor
    return height * scale, width * scale


@torch.inference_mode()
def generate(
    model: LoadedModel,
    *,
    prompts: list[str],
    negative_prompts: list[str | None],
    seeds: list[int],
    num_inference_steps: int,
    guidance_scale: float,
    height: int,
    width: int,
    interrupted: Callable[[], bool] | None = None,
) -> list[bytes]:
    """One pipeline call; PNG bytes in the order of ``prompts``.

    ``interrupted`` is asked after every denoising step; when it answers True the call raises ``Interrupted``
    at once, so a cancelled 512x512 call does not hold the worker for the rest of its steps and the VAE.
    """
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
    negatives = None if not any(negative_prompts) else [n or "" for n in negative_prompts]
    watch = {} if interrupted is None else {"callback_on_step_end": _raise_when(interrupted)}
    images = model.pipeline(
        prompt=prompts,
        negative_prompt=negatives,
        generator=generators,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        height=height,
        width=width,
        output_type="np",
        **watch,
    ).images
    return [encode_png(image) for image in images]


def _raise_when(interrupted: Callable[[], bool]) -> Callable[..., dict]:
    """A diffusers ``callback_on_step_end`` that aborts the call; raising skips the steps left and the decoder."""

    def on_step_end(_pipeline: object, step: int, _timestep: object, tensors: dict) -> dict:
        if interrupted():
            raise Interrupted(f"stopped after denoising step {step + 1}")
        return tensors

    return on_step_end


def encode_png(image: np.ndarray) -> bytes:
    """Float RGB in [0, 1] to PNG, rounded as diffusers rounds; the same pixels always give the same bytes."""
    pixels = (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()
