"""Full-size stand-ins: Stable Diffusion v1.5 and open_clip ViT-B/16 with random weights, in the layouts users have.

They let the rehearsal, the tests and the GPU check run the real-scale code paths without downloading anything:
the SD directory loads through ``DiffusionPipeline.from_pretrained`` and the checkpoint through
``open_clip.create_model(..., pretrained=file)``, exactly as real weights do. Each carries a stand-in marker
(``gift_common.stand_in``), so no report made on them can pass for a result.

The configs are the published ones of ``stable-diffusion-v1-5`` (its ``unet/``, ``vae/``, ``text_encoder/`` (CLIP
ViT-L/14's text tower) and ``scheduler/`` configs); the tokenizer is CLIP's BPE, written from open_clip's bundled
file. The SD weights are stored in float16 (1.7 GB for the UNet instead of 3.4 GB; the worker casts them to its
dtype at load) and each network is cast as soon as it is built, so writing peaks near one fp32 UNet in memory.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from gift_common.clip_tokenizer import write_clip_tokenizer
from gift_common.stand_in import is_stand_in, write_marker

SD15_NAME = "stable-diffusion-v1-5"
VIT_NAME = "ViT-B-16-quickgelu"
VIT_CHECKPOINT = "open_clip_pytorch_model.bin"

# stable-diffusion-v1-5/unet/config.json
UNET_CONFIG = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
# stable-diffusion-v1-5/vae/config.json
VAE_CONFIG = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
# stable-diffusion-v1-5/text_encoder/config.json: openai/clip-vit-large-patch14's text tower (its ids as published)
TEXT_ENCODER_CONFIG = {
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "projection_dim": 768,
    "vocab_size": 49408,
}
# stable-diffusion-v1-5/scheduler/scheduler_config.json: PNDM, as published; the worker's `scheduler` setting swaps it
SCHEDULER_CONFIG = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}


def _seeded_half(seed: int, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """Build in float32 (PyTorch's default init) under a fixed seed, then halve at once to free the fp32 copy."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().to(torch.float16).eval()


def write_sd15(directory: Path, seed: int = 0) -> None:
    """Save a Stable-Diffusion-v1.5-architecture pipeline with random weights at ``directory``."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tokenizer_dir = directory / "tokenizer"
    write_clip_tokenizer(tokenizer_dir)
    pipeline = StableDiffusionPipeline(
        vae=_seeded_half(seed, lambda: AutoencoderKL(**VAE_CONFIG)),
        text_encoder=_seeded_half(seed, lambda: CLIPTextModel(CLIPTextConfig(**TEXT_ENCODER_CONFIG))),
        tokenizer=CLIPTokenizer.from_pretrained(tokenizer_dir),
        unet=_seeded_half(seed, lambda: UNet2DConditionModel(**UNET_CONFIG)),
        scheduler=PNDMScheduler.from_config(SCHEDULER_CONFIG),  # ignores the legacy clip_sample
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(directory, safe_serialization=True)
    # save_pretrained rewrites the tokenizer in this transformers version's own format; keep the portable files.
    shutil.rmtree(tokenizer_dir)
    write_clip_tokenizer(tokenizer_dir)
    write_marker(directory, f"{SD15_NAME} (architecture and configs only)")


def write_vit_b16(directory: Path, seed: int = 0) -> None:
    """Save an open_clip ViT-B-16-quickgelu state dict with random weights (float32, as open_clip's files)."""
    import open_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(VIT_NAME, pretrained=None, pretrained_image=False, pretrained_text=False)
    directory.mkdir(parents=True, exist_ok=True)
    checkpoint = directory / VIT_CHECKPOINT
    torch.save(model.state_dict(), checkpoint)
    write_marker(checkpoint, f"open_clip {VIT_NAME} (architecture only)")


def _write_atomically(target: Path, write: Callable[[Path], None], marked: str = "") -> Path:
    """Write into a scratch folder beside ``target``, then rename: a killed run leaves no half-written stand-in.

    ``target / marked`` carries the marker; one already there is a complete stand-in (the marker is written last).
    """
    if is_stand_in(target / marked):
        return target
    if target.exists():
        raise FileExistsError(f"{target} exists and is not a stand-in: remove it or choose another --out")
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write(scratch)
        os.rename(scratch, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def write_standins(out: Path, seed: int = 0) -> dict[str, Path]:
    """Both stand-ins under ``out``; ones already there are kept. Returns their paths by name."""
    out = Path(out)
    sd15 = _write_atomically(out / SD15_NAME, lambda d: write_sd15(d, seed))
    vit = _write_atomically(out / VIT_NAME, lambda d: write_vit_b16(d, seed), VIT_CHECKPOINT) / VIT_CHECKPOINT
    return {SD15_NAME: sd15, VIT_NAME: vit}


def add_safety_checker(directory: Path, calibration: Sequence[np.ndarray], seed: int = 0) -> None:
    """Give a pipeline directory a toy safety checker (Stable Diffusion's class, a tiny CLIP vision tower) that
    flags about half of the pictures like ``calibration`` (uint8 RGB arrays, the pipeline's own draws): its
    threshold is their median score, so a test meets both outcomes. Real SD v1.5 directories hold the full-size
    checker; the worker treats both alike."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8}  # fmt: skip
    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        checker = StableDiffusionSafetyChecker(CLIPConfig(vision_config=vision, text_config=text, projection_dim=16))
        pixels = processor(list(calibration), return_tensors="pt").pixel_values
        with torch.no_grad():
            embeds = torch.nn.functional.normalize(checker.visual_projection(checker.vision_model(pixels)[1]))
            concept = torch.nn.functional.normalize(embeds[0] - embeds.mean(0), dim=0)
            checker.concept_embeds.copy_(concept.expand_as(checker.concept_embeds))
            checker.concept_embeds_weights.fill_(float((embeds @ concept).median()))
            checker.special_care_embeds_weights.fill_(2.0)  # a cosine never exceeds 1: no special care
    checker.save_pretrained(directory / "safety_checker")
    processor.save_pretrained(directory / "feature_extractor")
    index_file = directory / "model_index.json"
    index = json.loads(index_file.read_text())
    index |= {"safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
              "feature_extractor": ["transformers", "CLIPImageProcessor"], "requires_safety_checker": True}  # fmt: skip
    index_file.write_text(json.dumps(index, indent=2))
