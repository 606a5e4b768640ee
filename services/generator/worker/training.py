"""An adaptation job's training: diffusers' text-to-image LoRA recipe with peft, on the worker's own pipeline.

The recipe of diffusers' ``train_text_to_image_lora.py``: a LoRA (``LoraConfig``, Gaussian init, alpha = rank) on
the UNet's attention projections, the base weights frozen; each step encodes a few of the archive's images to
latents, noises them at random timesteps of the model's own noise schedule (DDPM on the pipeline scheduler's
config), and fits the noise (or the velocity, for a v-prediction model) with an MSE loss under AdamW.

The LoRA is added to the pipeline's UNet under its own name, the only active adapter while training (the caller
puts the pipeline on its base model first, so that no loaded adapter changes the captions' embeddings), and deleted
after: the base weights are never copied or changed, so the worker keeps one copy of the model for images and
training. Each step's randomness (images, timesteps, noise) is drawn from the job's seed and the step's number, so a
job resumed from a checkpoint goes on as it would have without the interruption. A checkpoint is a safetensors
file (the LoRA's weights, AdamW's moments and the step): nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import Tensor

from services.generator.adaptations import Adaptation
from services.generator.worker.synthesis import LoadedModel

log = logging.getLogger("gift.worker")
ADAPTER = "gift_training"  # the LoRA's name in the UNet while it trains
TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]  # the attention projections, as in diffusers' recipe
BATCH = 4  # images per step: the recipe's batch, kept small so that a step fits beside the image pipeline's memory
ENCODE_BATCH = 8  # images per VAE call when the archive is encoded once, before the first step


@dataclass(frozen=True)
class Encoded:
    """The archive once through the VAE and the text encoder: latent means and deviations (unscaled) on the CPU,
    caption embeddings on the model's device."""

    mean: Tensor
    std: Tensor
    text: Tensor


def train(
    model: LoadedModel,
    pairs: Sequence[tuple[Image.Image, str]],
    job: Adaptation,
    *,
    resume: bytes | None,
    every: int,
    report: Callable[[int], bool],
    save: Callable[[int, bytes], None],
) -> bytes | None:
    """Train ``job``'s LoRA from its checkpoint ``resume`` (None: from the start). After each step ``report(step)``
    says whether to go on; every ``every`` steps ``save(step, checkpoint)``. Returns the adapter's file (diffusers'
    LoRA format), or None when told to stop."""
    pipeline = model.pipeline
    unet = getattr(pipeline.unet, "_orig_mod", pipeline.unet)
    encoded = _encode(model, pairs)
    torch.manual_seed(_seed(job.seed, -1))  # the LoRA's initial weights
    from peft import LoraConfig

    unet.add_adapter(
        LoraConfig(r=job.rank, lora_alpha=job.rank, init_lora_weights="gaussian", target_modules=TARGETS),
        adapter_name=ADAPTER,
    )
    try:
        unet.enable_adapters()  # a pipeline on its base model has its loaded adapters' layers disabled
        unet.set_adapter(ADAPTER)
        params = _trainable(unet)
        optimizer = torch.optim.AdamW([p for _, p in params], lr=job.learning_rate)
        start = _restore(resume, params, optimizer) if resume is not None else 0
        if start:
            log.info("adaptation %s: resumed from its checkpoint at step %d", job.id, start)
            if not report(start):
                return None
        unet.train()
        for step in range(start, job.steps):
            _step(model, encoded, job.seed, step, optimizer)
            if not report(step + 1):
                return None
            if (step + 1) % every == 0 and step + 1 < job.steps:
                save(step + 1, _checkpoint(step + 1, params, optimizer))
        return _lora_file(pipeline, unet)
    finally:
        unet.eval()
        unet.delete_adapters(ADAPTER)


def _seed(seed: int, step: int) -> int:
    """A generator's seed for one step of a job, the same whichever worker runs it."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{step}".encode()).digest()[:8], "big") >> 1


def _trainable(unet: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """The training LoRA's parameters, in float32 (a half-precision model's LoRA would underflow); nothing else
    has a gradient."""
    params = []
    for name, parameter in unet.named_parameters():
        trains = f".{ADAPTER}." in name
        parameter.requires_grad_(trains)
        if trains:
            parameter.data = parameter.data.float()
            params.append((name, parameter))
    return params


def _pixels(image: Image.Image, height: int, width: int) -> Tensor:
    """The image scaled to cover the model's resolution, its centre cut out, as a CHW tensor in [-1, 1]."""
    fitted = ImageOps.fit(image, (width, height), Image.Resampling.BICUBIC)
    data = torch.frombuffer(bytearray(fitted.tobytes()), dtype=torch.uint8).reshape(height, width, 3)
    return data.permute(2, 0, 1).float() / 127.5 - 1


@torch.no_grad()
def _encode(model: LoadedModel, pairs: Sequence[tuple[Image.Image, str]]) -> Encoded:
    pipeline = model.pipeline
    vae, device = pipeline.vae, pipeline.device
    means, stds = [], []
    for first in range(0, len(pairs), ENCODE_BATCH):
        batch = torch.stack(
            [_pixels(image, model.height, model.width) for image, _ in pairs[first : first + ENCODE_BATCH]]
        )
        latents = vae.encode(batch.to(device, vae.dtype)).latent_dist
        means.append(latents.mean.float().cpu())
        stds.append(latents.std.float().cpu())
    tokenizer = pipeline.tokenizer
    ids = tokenizer([caption for _, caption in pairs], padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids  # fmt: skip
    text = pipeline.text_encoder(ids.to(device))[0]
    return Encoded(torch.cat(means), torch.cat(stds), text)


def _step(model: LoadedModel, encoded: Encoded, seed: int, step: int, optimizer: torch.optim.Optimizer) -> None:
    pipeline = model.pipeline
    unet, device = pipeline.unet, pipeline.device
    schedule = _noise_schedule(pipeline)
    generator = torch.Generator().manual_seed(_seed(seed, step))
    count = len(encoded.mean)
    chosen = torch.randperm(count, generator=generator)[: min(BATCH, count)]
    mean, std = encoded.mean[chosen], encoded.std[chosen]
    latents = (mean + std * torch.randn(mean.shape, generator=generator)) * pipeline.vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=generator)
    timesteps = torch.randint(0, schedule.config.num_train_timesteps, (len(chosen),), generator=generator)
    latents, noise, timesteps = latents.to(device), noise.to(device), timesteps.to(device)
    noisy = schedule.add_noise(latents, noise, timesteps)
    if schedule.config.prediction_type == "v_prediction":
        target = schedule.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    text = encoded.text[chosen.to(encoded.text.device)]
    predicted = unet(noisy.to(unet.dtype), timesteps, encoder_hidden_states=text).sample
    loss = F.mse_loss(predicted.float(), target.float())
    torch.autograd.backward(loss)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _noise_schedule(pipeline: Any) -> Any:
    """The model's own training noise schedule: DDPM on its scheduler's betas and prediction type."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(pipeline.scheduler.config)


def _checkpoint(step: int, params: list[tuple[str, torch.nn.Parameter]], optimizer: torch.optim.Optimizer) -> bytes:
    from safetensors.torch import save

    tensors = {"step": torch.tensor(step)}
    tensors |= {f"lora/{name}": parameter.detach().cpu().contiguous() for name, parameter in params}
    for index, state in optimizer.state_dict()["state"].items():
        tensors |= {f"adam/{index}/{key}": torch.as_tensor(value).cpu().contiguous() for key, value in state.items()}
    return save(tensors)


def _restore(data: bytes, params: list[tuple[str, torch.nn.Parameter]], optimizer: torch.optim.Optimizer) -> int:
    """Load a checkpoint into the LoRA and AdamW; returns its step."""
    from safetensors.torch import load

    tensors = load(data)
    with torch.no_grad():
        for name, parameter in params:
            parameter.copy_(tensors[f"lora/{name}"])
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("adam/"):
            _, index, field = key.split("/")
            state.setdefault(int(index), {})[field] = value.to(params[int(index)][1].device)
    for values in state.values():
        values["step"] = values["step"].cpu()  # AdamW keeps its step count on the CPU
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    return int(tensors["step"])


def _lora_file(pipeline: object, unet: torch.nn.Module) -> bytes:
    """The LoRA saved as diffusers saves one (``save_lora_weights``): what POST /v1/adapters takes."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import get_peft_model_state_dict

    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet, adapter_name=ADAPTER))
    layers = {key: value.detach().float().cpu().contiguous() for key, value in layers.items()}
    with tempfile.TemporaryDirectory() as directory:
        StableDiffusionPipeline.save_lora_weights(directory, unet_lora_layers=layers, safe_serialization=True)
        return (Path(directory) / "pytorch_lora_weights.safetensors").read_bytes()
