"""The generator's default model: a tiny Stable-Diffusion-architecture pipeline for a 32x32 world.

It is built from the configs below, never downloaded, and saved like any Stable Diffusion directory, so the worker
loads it with the same ``DiffusionPipeline.from_pretrained`` call it uses for a real model. Until trained weights
ship in ``tinyworld/weights/sd``, its weights are a seeded random initialisation: the images are noise-like, but
every code path (tokenizer, text encoder, UNet, scheduler, VAE) is real and deterministic.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from tinyworld.tokenizer import MODEL_MAX_LENGTH, write_clip_tokenizer

T = TypeVar("T")

UNTRAINED_NAME = "tinyworld-untrained-v1"
TRAINED_DIR = Path(__file__).parent / "weights" / "sd"
VOCAB_SIZE = 49408
BOS_TOKEN_ID, EOS_TOKEN_ID = VOCAB_SIZE - 2, VOCAB_SIZE - 1

# The architecture a follow-up trains on the procedural 32x32 world; the names are diffusers/transformers arguments.
TEXT_ENCODER_CONFIG = {
    "vocab_size": VOCAB_SIZE,
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": MODEL_MAX_LENGTH,
    "hidden_act": "quick_gelu",
    "projection_dim": 64,
    "bos_token_id": BOS_TOKEN_ID,
    "eos_token_id": EOS_TOKEN_ID,
    "pad_token_id": EOS_TOKEN_ID,
}
# Three resolution levels: 32x32 RGB <-> 8x8x4 latents, SD's factor-8 spatial/channel trade scaled down to 4.
VAE_CONFIG = {
    "sample_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 3,
    "up_block_types": ("UpDecoderBlock2D",) * 3,
    "block_out_channels": (32, 64, 64),
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "scaling_factor": 0.18215,
}
# SD 1.5's layout cut to two levels (8x8 then 4x4): cross-attention at the top level and in the middle block.
UNET_CONFIG = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "cross_attention_dim": TEXT_ENCODER_CONFIG["hidden_size"],
    "attention_head_dim": (2, 4),  # diffusers' legacy name: the number of heads, 16 channels each here
    "norm_num_groups": 32,
}
# SD 1.5's noise schedule, sampled with DPM-Solver++ (2M): good images in about 25 steps.
SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "algorithm_type": "dpmsolver++",
    "solver_order": 2,
    "timestep_spacing": "leading",
    "steps_offset": 1,
}


def _seeded(seed: int, build: Callable[[], T]) -> T:
    """Each module's weights depend only on the seed, not on what was built before it or on the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def build_untrained_pipeline(directory: Path, seed: int = 0) -> None:
    """Save a seeded, untrained pipeline at ``directory`` in the layout of a Stable Diffusion checkpoint."""
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    directory = Path(directory)
    tokenizer_dir = directory / "tokenizer"
    write_clip_tokenizer(tokenizer_dir)
    pipeline = StableDiffusionPipeline(
        vae=_seeded(seed, lambda: AutoencoderKL(**VAE_CONFIG)),
        text_encoder=_seeded(seed, lambda: CLIPTextModel(CLIPTextConfig(**TEXT_ENCODER_CONFIG))),
        tokenizer=CLIPTokenizer.from_pretrained(tokenizer_dir),
        unet=_seeded(seed, lambda: UNet2DConditionModel(**UNET_CONFIG)),
        scheduler=DPMSolverMultistepScheduler(**SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(directory, safe_serialization=True)
    # save_pretrained rewrites the tokenizer in this transformers version's own format; keep the portable files.
    shutil.rmtree(tokenizer_dir)
    write_clip_tokenizer(tokenizer_dir)


def default_model_dir(home: Path) -> Path:
    """The default model's directory: the shipped trained pipeline, else an untrained one built once under ``home``."""
    if (TRAINED_DIR / "model_index.json").is_file():
        return TRAINED_DIR
    target = Path(home) / "models" / UNTRAINED_NAME
    if not target.is_dir():
        _build_atomically(target)
    return target


def _build_atomically(target: Path) -> None:
    """Build next to ``target`` and rename, so a reader never sees a half-written model; a concurrent build wins."""
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build_untrained_pipeline(scratch)
        os.rename(scratch, target)
    except OSError:
        if not target.is_dir():
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
