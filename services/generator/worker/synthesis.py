"""Diffusers pipelines, loaded once from local directories, turned into PNG bytes.

An image depends only on its own prompt, negative prompt and seed: each gets its own CPU ``torch.Generator``
(CPU so that a seed means the same noise on every device), whatever else shares its pipeline call. A pipeline
directory with a safety checker (Stable Diffusion v1.5's) blacks out the images it flags; such an image is drawn
again from seeds derived from its own, so a set keeps its size and the same request still gives the same images.

On CUDA a model runs in float16 with PyTorch's scaled-dot-product attention, channels-last convolutions and,
when asked, a compiled UNet. Everything of that kind that can change pixels (device, dtype, attention, memory
format, compile, the scheduler's class and config) is folded into the model's fingerprint, so the image cache
never hands out an image made by another variant of the same weights.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from PIL import Image

from gift_common.errors import UserError
from gift_common.manifest import verify as verify_manifest
from gift_common.schemas import MAX_SEED
from gift_common.stand_in import is_stand_in

if TYPE_CHECKING:  # imported only where a model is loaded; not type-checked (pyproject.toml), so Any to mypy
    from diffusers import DiffusionPipeline

log = logging.getLogger("gift.worker")


class ModelDirectoryError(UserError):
    """A --model directory that is not a diffusers pipeline; the message says what to put where."""


REDRAWS = 5  # draws after a blacked-out one; a prompt flagged every time then stays black rather than hold the job


class Interrupted(Exception):
    """A pipeline call cut short between denoising steps: nobody wants its images any more."""


@dataclass
class LoadedModel:
    name: str
    directory: Path
    pipeline: DiffusionPipeline
    fingerprint: str  # the weights' files and the runtime variant (``runtime_variant``) with the worker's scheduler
    height: int
    width: int
    batch_size: int | None = None  # images per pipeline call for this model; None = the worker's setting
    stand_in: bool = False  # random weights (gift_common.stand_in): reports must say so
    variant: dict[str, object] = field(default_factory=dict)
    schedulers: dict[str, object] = field(default_factory=dict)  # what a job may name (Scheduler), loaded once
    scheduler: str = "dpmsolver++"  # of those, the one for jobs that name none (the worker's setting)
    fingerprints: dict[str, str] = field(default_factory=dict)  # the model's fingerprint under each of them


@dataclass(frozen=True)
class RuntimeOptions:
    """How a worker runs its models (worker settings ``scheduler`` and ``compile_unet``)."""

    scheduler: str = "dpmsolver++"  # or "directory": keep the scheduler the directory's config names
    compile_unet: bool = False


def fingerprint(directory: Path) -> str:
    """SHA-256 over every file's relative path and bytes: the model's identity in the image cache."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and ".cache" not in p.parts):
        digest.update(str(path.relative_to(directory)).encode() + b"\0")
        with path.open("rb") as file:
            for block in iter(partial(file.read, 1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def load_model(
    name: str,
    directory: Path,
    device: torch.device,
    options: RuntimeOptions = RuntimeOptions(),
    batch_size: int | None = None,
) -> LoadedModel:
    from diffusers import DiffusionPipeline

    if not (directory / "model_index.json").is_file():
        raise ModelDirectoryError(
            f"model {name!r}: {directory} is not a diffusers pipeline directory (no model_index.json). "
            "Put there a pipeline saved with save_pretrained, e.g. a local copy of stable-diffusion-v1-5."
        )
    verify_manifest(directory)  # shipped weights: a damaged file is an error, not a model that draws garbage
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    try:
        pipeline = DiffusionPipeline.from_pretrained(directory, local_files_only=True, dtype=dtype)
    except (OSError, ValueError) as error:  # an unreadable model_index.json or component: the user's to fix
        message = " ".join(str(error).split())
        raise ModelDirectoryError(
            f"model {name!r}: {directory} is not a loadable diffusers pipeline: {message[:300]}"
        ) from None
    pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    schedulers = scheduler_choices(pipeline)
    if schedulers:
        pipeline.scheduler = schedulers[options.scheduler]
    variant = configure_runtime(pipeline, device, options)
    files = fingerprint(directory)
    fingerprints = {name: variant_fingerprint(files, variant | scheduler_variant(s)) for name, s in schedulers.items()}
    height, width = native_size(pipeline)
    model = LoadedModel(
        name, directory, pipeline, variant_fingerprint(files, variant), height, width, batch_size=batch_size,
        stand_in=is_stand_in(directory), variant=variant, schedulers=schedulers, fingerprints=fingerprints,
        scheduler=options.scheduler,
    )  # fmt: skip
    if options.compile_unet:
        warm_up(model, batch_size or 1)
    log.info("loaded %smodel %s from %s on %s: %dx%d, %s, fingerprint %s",
             "STAND-IN (random weights) " if model.stand_in else "", name, directory, device, width, height,
             json.dumps(variant, sort_keys=True), model.fingerprint[:12])  # fmt: skip
    return model


def scheduler_choices(pipeline: DiffusionPipeline) -> dict[str, object]:
    """The schedulers a job may name: the directory's own and DPM-Solver++ (2M) from its noise schedule (what
    "25 DPM-Solver steps" means); none for a pipeline without a scheduler. Each call sets its timesteps afresh,
    so one instance of each serves every call."""
    from diffusers import DPMSolverMultistepScheduler

    own = getattr(pipeline, "scheduler", None)
    if own is None:
        return {}
    config = {**own.config, "algorithm_type": "dpmsolver++", "solver_order": 2}
    return {"directory": own, "dpmsolver++": DPMSolverMultistepScheduler.from_config(config)}


def scheduler_variant(scheduler: object | None) -> dict[str, object]:
    """The scheduler's part of the runtime variant: its class and settings."""
    config = getattr(scheduler, "config", None)
    return {
        "scheduler": type(scheduler).__name__ if scheduler is not None else None,
        "scheduler_config": _public(config) if config is not None else None,
    }


def configure_runtime(pipeline: DiffusionPipeline, device: torch.device, options: RuntimeOptions) -> dict[str, object]:
    """Apply the attention, memory format and compile choices; return them with the pipeline's scheduler (the
    worker's setting) as the runtime variant."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    networks = [net for part in ("unet", "vae") if (net := getattr(pipeline, part, None)) is not None]
    for net in networks:
        if hasattr(net, "set_attn_processor"):
            net.set_attn_processor(AttnProcessor2_0())  # the default where SDPA exists; explicit, so it is known
    channels_last = device.type == "cuda"
    if channels_last:
        for net in networks:
            net.to(memory_format=torch.channels_last)
    if options.compile_unet:
        pipeline.unet = torch.compile(pipeline.unet)
    return {
        "device": device.type,
        "dtype": str(pipeline.dtype).removeprefix("torch."),
        "attention": "sdpa",
        "channels_last": channels_last,
        "compile_unet": options.compile_unet,
        **scheduler_variant(getattr(pipeline, "scheduler", None)),
    }


def _public(config: Mapping[str, object]) -> dict[str, object]:
    """A config without diffusers' bookkeeping (``_class_name``, ``_diffusers_version``, ...)."""
    return {key: value for key, value in config.items() if not key.startswith("_")}


def variant_fingerprint(files: str, variant: dict[str, object]) -> str:
    """The files' fingerprint with the runtime variant folded in: same weights, other pixels, other key."""
    return hashlib.sha256(f"{files}\0{json.dumps(variant, sort_keys=True, default=str)}".encode()).hexdigest()


def warm_up(model: LoadedModel, batch_size: int) -> None:
    """One short call at the native size and batch, so compiling happens at load, not on the first job."""
    generate(model, prompts=[""] * batch_size, negative_prompts=[None] * batch_size, seeds=list(range(batch_size)),
             num_inference_steps=2, guidance_scale=7.5, height=model.height, width=model.width)  # fmt: skip


ADAPTED_PARTS = ("unet", "text_encoder")  # the components whose layers a LoRA file may adapt (its keys' first name)


def adaptable_layers(pipeline: DiffusionPipeline) -> dict[str, list[int]]:
    """Each linear and convolution layer an adapter may adapt, by the name its keys give it (``unet.`` + the module's
    name) with its weight's shape: what the API checks an uploaded adapter against without loading the model."""
    layers = {}
    for part in ADAPTED_PARTS:
        network = getattr(pipeline, part, None)
        network = getattr(network, "_orig_mod", network)  # a compiled UNet's modules are its original's
        if network is None:
            continue
        for name, module in network.named_modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                layers[f"{part}.{name}"] = list(module.weight.shape)
    return layers


def native_size(pipeline: DiffusionPipeline) -> tuple[int, int]:
    denoiser = getattr(pipeline, "unet", None)  # not `or`: a compiled module's truth value raises (it proxies len)
    if denoiser is None:
        denoiser = pipeline.transformer
    size = denoiser.config.sample_size
    height, width = (size, size) if isinstance(size, int) else size
    scale = pipeline.vae_scale_factor
    return height * scale, width * scale


class Drawn(NamedTuple):
    pngs: list[bytes]  # in the order of the prompts
    replaced: list[int]  # positions whose first draw the safety checker blacked out, drawn again


def redraw_seed(seed: int, attempt: int) -> int:
    """The seed of an image's ``attempt``-th draw after the safety checker blacked out the ones before."""
    digest = hashlib.sha256(f"gift-redraw/{seed}/{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & MAX_SEED


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
    scheduler: str | None = None,
    interrupted: Callable[[], bool] | None = None,
) -> Drawn:
    """One pipeline call, then one more for the images a safety checker blacked out (up to REDRAWS times).

    ``scheduler`` names one of the model's ``schedulers`` (None: its default). ``interrupted`` is asked after
    every denoising step; when it answers True the call raises ``Interrupted`` at once, so a cancelled 512x512 call
    does not hold the worker for the rest of its steps and the VAE.
    """
    if model.schedulers:
        model.pipeline.scheduler = model.schedulers[scheduler or model.scheduler]
    negatives = [n or "" for n in negative_prompts] if any(negative_prompts) else None
    call = partial(_call, model.pipeline, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                   height=height, width=width, interrupted=interrupted)  # fmt: skip
    images, flagged = call(prompts, negatives, seeds)
    replaced = sorted(flagged)
    for attempt in range(1, REDRAWS + 1):
        if not flagged:
            break
        again = sorted(flagged)
        redrawn, still = call([prompts[i] for i in again], negatives and [negatives[i] for i in again],
                              [redraw_seed(seeds[i], attempt) for i in again])  # fmt: skip
        for position, i in enumerate(again):
            images[i] = redrawn[position]
        flagged = {again[position] for position in still}
    if flagged:
        log.warning("model %s: %d image(s) its safety checker blacked out again in %d redraws are kept black",
                    model.name, len(flagged), REDRAWS)  # fmt: skip
    return Drawn([encode_png(image) for image in images], replaced)


def _call(
    pipeline: DiffusionPipeline,
    prompts: list[str],
    negatives: list[str] | None,
    seeds: list[int],
    *,
    num_inference_steps: int,
    guidance_scale: float,
    height: int,
    width: int,
    interrupted: Callable[[], bool] | None,
) -> tuple[list[np.ndarray], set[int]]:
    """One pipeline call: the images, and the positions its safety checker (if any) blacked out."""
    watch = {} if interrupted is None else {"callback_on_step_end": _raise_when(interrupted)}
    output = pipeline(
        prompt=prompts,
        negative_prompt=negatives,
        generator=[torch.Generator("cpu").manual_seed(seed) for seed in seeds],
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        height=height,
        width=width,
        output_type="np",
        **watch,
    )
    flags = getattr(output, "nsfw_content_detected", None) or []
    return list(output.images), {i for i, flagged in enumerate(flags) if flagged}


def _raise_when(interrupted: Callable[[], bool]) -> Callable[..., dict[str, torch.Tensor]]:
    """A diffusers ``callback_on_step_end`` that aborts the call; raising skips the steps left and the decoder."""

    def on_step_end(
        _pipeline: object, step: int, _timestep: object, tensors: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
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
