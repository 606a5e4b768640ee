"""The generator's default model: a tiny Stable-Diffusion-architecture pipeline for a 32x32 world.

It is built from the configs below, never downloaded, and saved like any Stable Diffusion directory, so the worker
loads it with the same ``DiffusionPipeline.from_pretrained`` call it uses for a real model. Until trained weights
ship in ``tinyworld/weights/sd``, its weights are a seeded random initialisation: the images are noise-like, but
every code path (tokenizer, text encoder, UNet, scheduler, VAE) is real and deterministic.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from gift_common.clip_tokenizer import MODEL_MAX_LENGTH, write_clip_tokenizer
from tinyworld.vocabulary import BPE_FILE, vocab_size

T = TypeVar("T")

UNTRAINED_NAME = "tinyworld-untrained-v3"  # bumped with the architecture (v3: the world's own tokenizer)
TRAINED_DIR = Path(__file__).parent / "weights" / "sd"
VOCAB_SIZE = vocab_size()  # the world's own tokenizer (tinyworld/vocabulary.py)
BOS_TOKEN_ID, EOS_TOKEN_ID = VOCAB_SIZE - 2, VOCAB_SIZE - 1

CLIP_CONFIG = Path(__file__).with_name("tiny-clip.json")


def _text_encoder_config() -> dict[str, object]:
    """The tiny CLIP's text tower as a CLIPTextModel config: Stable Diffusion conditions on CLIP's text encoder, and
    training starts this one from the tiny CLIP's weights. open_clip's defaults fill what tiny-clip.json omits."""
    clip = json.loads(CLIP_CONFIG.read_text())
    text = clip["text_cfg"]
    return {
        "vocab_size": VOCAB_SIZE,
        "hidden_size": text["width"],
        "intermediate_size": int(text["width"] * text.get("mlp_ratio", 4.0)),
        "num_hidden_layers": text["layers"],
        "num_attention_heads": text["heads"],
        "max_position_embeddings": MODEL_MAX_LENGTH,
        "hidden_act": "quick_gelu" if clip.get("quick_gelu") else "gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": clip["embed_dim"],
        "bos_token_id": BOS_TOKEN_ID,
        "eos_token_id": EOS_TOKEN_ID,
        "pad_token_id": EOS_TOKEN_ID,
    }


# The architecture trained on the procedural 32x32 world; the names are diffusers/transformers arguments.
TEXT_ENCODER_CONFIG = _text_encoder_config()
# Two resolution levels: 32x32 RGB <-> 16x16x4 latents. SD's factor 8 would leave 4x4 latents; even factor 4 (8x8)
# blurred the world's one-pixel strokes and their colours away (tinyworld/SD_NOTES.md).
VAE_CONFIG = {
    "sample_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 2,
    "up_block_types": ("UpDecoderBlock2D",) * 2,
    "block_out_channels": (16, 32),
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 4,  # groups of 4+ channels: one channel per group would normalise each colour away
    "scaling_factor": 0.18215,  # training replaces it with 1 / std of its latents, as SD's was chosen
}
# SD 1.5's layout cut to three levels (16x16, 8x8, 4x4): cross-attention at 8x8 and in the middle block only, since
# attention over 256 positions at 16x16 would cost more than the rest of the network.
UNET_CONFIG = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (32, 64, 128),
    "layers_per_block": 1,
    "cross_attention_dim": TEXT_ENCODER_CONFIG["hidden_size"],
    "attention_head_dim": (2, 4, 8),  # diffusers' legacy name: the number of heads, 16 channels each here
    "norm_num_groups": 8,
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


def untrained_components(seed: int = 0) -> dict[str, torch.nn.Module]:
    """The seeded, untrained networks of the pipeline: what training starts from."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    return {
        "vae": _seeded(seed, lambda: AutoencoderKL(**VAE_CONFIG)),
        "text_encoder": _seeded(seed, lambda: CLIPTextModel(CLIPTextConfig(**TEXT_ENCODER_CONFIG))),
        "unet": _seeded(seed, lambda: UNet2DConditionModel(**UNET_CONFIG)),
    }


def save_pipeline(directory: Path, vae: torch.nn.Module, text_encoder: torch.nn.Module, unet: torch.nn.Module) -> None:
    """Save the networks with the tokenizer and scheduler in the layout of a Stable Diffusion checkpoint."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    directory = Path(directory)
    tokenizer_dir = directory / "tokenizer"
    write_clip_tokenizer(tokenizer_dir, BPE_FILE)
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(tokenizer_dir),
        unet=unet,
        scheduler=DPMSolverMultistepScheduler(**SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(directory, safe_serialization=True)
    # save_pretrained rewrites the tokenizer in this transformers version's own format; keep the portable files.
    shutil.rmtree(tokenizer_dir)
    write_clip_tokenizer(tokenizer_dir, BPE_FILE)
    _store_half(directory)


def _store_half(directory: Path) -> None:
    """Rewrite every weight file of a saved pipeline in float16, halving it; the configs keep float32.

    Loaders build the networks in the configs' float32 and cast the stored weights up, so the model runs as
    trained, with weights rounded to float16.
    """
    from safetensors.torch import load_file, save_file

    for path in sorted(Path(directory).rglob("*.safetensors")):
        tensors = load_file(path)
        save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, path, {"format": "pt"})


def build_untrained_pipeline(directory: Path, seed: int = 0) -> None:
    """Save a seeded, untrained pipeline at ``directory`` in the layout of a Stable Diffusion checkpoint."""
    save_pipeline(directory, **untrained_components(seed))


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
