"""Train the tiny text-to-image model on the world: first the VAE, then the UNet on cached latents.

A fixed set of world images is rendered once. The VAE learns to reconstruct them; their latents (mean and standard
deviation of the posterior) are then cached, so the UNet stage never runs the encoder. Each UNet step draws fresh
captions of its images with the world's own caption function, so an image is seen under many true captions.

    python -m tinyworld.sd_training --out /tmp/sd/model
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gift_common.clip_tokenizer import MODEL_MAX_LENGTH, write_clip_tokenizer
from gift_common.schedules import warmup_cosine
from tinyworld.pipeline import SCHEDULER_CONFIG, save_pipeline, untrained_components
from tinyworld.vocabulary import BPE_FILE
from tinyworld.world import World, caption, stream_rng

Log = Callable[[str], None]


@dataclass(frozen=True)
class TrainConfig:
    images: int = 60_000  # world images rendered once: the training set of both stages
    world_seed: int = 0
    seed: int = 0
    batch: int = 64  # UNet stage
    vae_batch: int = 16  # for a fixed number of images seen, small batches trained the VAE best (SD_NOTES.md)
    vae_steps: int = 1500
    vae_lr: float = 1e-3
    kl_weight: float = 1e-4  # per latent element, against a per-pixel L1: keeps the latents bounded, not Gaussian
    unet_steps: int = 6000
    unet_lr: float = 5e-4
    text_lr: float = 1e-4  # the text encoder's layers; 0 keeps them frozen (its token table is always frozen)
    uncond_prob: float = 0.1  # captions dropped to "" so that classifier-free guidance has an unconditional model
    ema_decay: float = 0.999
    snr_gamma: float = 0.0  # Min-SNR loss weighting when > 0
    warmup: int = 100
    threads: int = 2


@dataclass(frozen=True)
class WorldSet:
    """Rendered world images with what each shows, from which any number of true captions can be drawn."""

    images: np.ndarray  # (n, 32, 32, 3) uint8
    facts: tuple[dict[str, str], ...]
    kinds: tuple[str, ...]


def render_set(count: int, world_seed: int) -> WorldSet:
    pairs = World(world_seed).pairs(0, count)
    return WorldSet(np.stack([p.image for p in pairs]), tuple(p.facts for p in pairs), tuple(p.kind for p in pairs))


def to_pixels(images: np.ndarray) -> Tensor:
    """(n, 32, 32, 3) uint8 -> (n, 3, 32, 32) in [-1, 1], the VAE's input range."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


def _optimizer(model: nn.Module, lr: float, steps: int, warmup: int) -> tuple[torch.optim.Optimizer, object]:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=True)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup, steps))


def vae_loss(vae: nn.Module, pixels: Tensor, kl_weight: float, generator: torch.Generator) -> Tensor:
    """L1 reconstruction of a posterior sample plus a small KL to the unit Gaussian, both per element."""
    posterior = vae.encode(pixels).latent_dist
    reconstruction = vae.decode(posterior.sample(generator)).sample
    kl = posterior.kl().mean() / posterior.mean[0].numel()
    return F.l1_loss(reconstruction, pixels) + kl_weight * kl


def train_vae(vae: nn.Module, data: WorldSet, config: TrainConfig, log: Log = print) -> None:
    """Fit the VAE to the rendered images; batches and posterior samples depend only on the seed."""
    generator = torch.Generator().manual_seed(config.seed)
    optimizer, scheduler = _optimizer(vae, config.vae_lr, config.vae_steps, config.warmup)
    vae.train()
    start = time.monotonic()
    for step in range(config.vae_steps):
        indices = torch.randint(len(data.images), (config.vae_batch,), generator=generator).numpy()
        loss = vae_loss(vae, to_pixels(data.images[indices]), config.kl_weight, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % 100 == 0 or step == config.vae_steps - 1:
            log(f"vae step {step} loss {loss.item():.4f} {time.monotonic() - start:.0f}s")
    vae.eval()


@torch.no_grad()
def encode_latents(vae: nn.Module, images: np.ndarray, batch: int = 500) -> tuple[Tensor, Tensor]:
    """The posterior's mean and standard deviation of every image, unscaled."""
    means, stds = [], []
    for start in range(0, len(images), batch):
        posterior = vae.encode(to_pixels(images[start : start + batch])).latent_dist
        means.append(posterior.mean)
        stds.append(posterior.std)
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def reconstruct(vae: nn.Module, images: np.ndarray) -> np.ndarray:
    """Decode the posterior means: what the VAE keeps of ``images``, as uint8."""
    mean, _ = encode_latents(vae, images)
    pixels = vae.decode(mean).sample
    return ((pixels.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def clip_text_state(clip: Mapping[str, Tensor], positions: int) -> dict[str, Tensor]:
    """An open_clip CLIP's text tower as a transformers CLIPTextModel state dict.

    The attention's stacked q/k/v projection is split; the position table, open_clip's context length long, is
    extended to ``positions`` by repeating its last row (only padding sits there in world prompts).
    """
    table = clip["positional_embedding"]
    extra = table[-1:].expand(positions - len(table), -1)
    state = {
        "embeddings.token_embedding.weight": clip["token_embedding.weight"],
        "embeddings.position_embedding.weight": torch.cat([table, extra]),
        "final_layer_norm.weight": clip["ln_final.weight"],
        "final_layer_norm.bias": clip["ln_final.bias"],
    }
    names = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj"}
    names |= {"mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    layers = {int(key.split(".")[2]) for key in clip if key.startswith("transformer.resblocks.")}
    for i in sorted(layers):
        source, target = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        for kind in ("weight", "bias"):
            for old, new in names.items():
                state[f"{target}{new}.{kind}"] = clip[f"{source}{old}.{kind}"]
            q, k, v = clip[f"{source}attn.in_proj_{kind}"].chunk(3)
            state |= {f"{target}self_attn.{n}_proj.{kind}": t for n, t in zip("qkv", (q, k, v), strict=True)}
    return state


def latent_scale(mean: Tensor) -> float:
    """The factor that gives the latents unit variance, as Stable Diffusion's 0.18215 was chosen."""
    return 1 / mean.std().item()


def draw_captions(data: WorldSet, indices: np.ndarray, first: int, config: TrainConfig) -> list[str]:
    """A fresh true caption of each image (the ``first + j``-th of the stream), or "" with ``uncond_prob``."""
    captions = []
    for j, index in enumerate(indices):
        rng = stream_rng(config.seed, "sd-captions", first + j)
        text, _ = caption(data.facts[index], data.kinds[index], rng)
        captions.append("" if rng.random() < config.uncond_prob else text)
    return captions


def tokenize(tokenizer: Callable, captions: list[str]) -> Tensor:
    """Token ids exactly as StableDiffusionPipeline.encode_prompt makes them."""
    return tokenizer(
        captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


def noise_scheduler() -> object:
    """The training-time view of the sampler's noise schedule."""
    from diffusers import DDPMScheduler

    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type")
    return DDPMScheduler(**{key: SCHEDULER_CONFIG[key] for key in keys})


def denoising_loss(
    networks: nn.ModuleDict,
    ids: Tensor,
    latents: Tensor,
    scheduler: object,
    generator: torch.Generator,
    snr_gamma: float = 0.0,
) -> Tensor:
    """Stable Diffusion's loss: predict the noise (or velocity) added to the latents at a random timestep.

    With ``snr_gamma`` > 0, each timestep's loss is weighted by min(SNR, gamma) / SNR (Min-SNR, Hang et al. 2023;
    divided by SNR + 1 for velocity), so that the nearly clean timesteps stop dominating the gradient.
    """
    noise = torch.randn(latents.shape, generator=generator)
    steps = torch.randint(scheduler.config.num_train_timesteps, (len(latents),), generator=generator)
    noisy = scheduler.add_noise(latents, noise, steps)
    velocity = scheduler.config.prediction_type == "v_prediction"
    target = scheduler.get_velocity(latents, noise, steps) if velocity else noise
    context = networks["text_encoder"](ids).last_hidden_state
    errors = (networks["unet"](noisy, steps, context).sample - target).square().mean(dim=(1, 2, 3))
    if snr_gamma > 0:
        alpha = scheduler.alphas_cumprod[steps]
        snr = alpha / (1 - alpha)
        errors = errors * snr.clamp(max=snr_gamma) / (snr + 1 if velocity else snr)
    return errors.mean()


def _trainable(networks: nn.ModuleDict, config: TrainConfig) -> list[dict]:
    """UNet at ``unet_lr``; the text encoder's layers at ``text_lr``; the 49,408-row token table frozen."""
    networks["text_encoder"].requires_grad_(config.text_lr > 0)
    networks["text_encoder"].get_input_embeddings().requires_grad_(False)
    text = [p for p in networks["text_encoder"].parameters() if p.requires_grad]
    return [
        {"params": list(networks["unet"].parameters()), "lr": config.unet_lr},
        {"params": text, "lr": config.text_lr},
    ]


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)


def train_unet(
    networks: nn.ModuleDict,
    tokenizer: Callable,
    latents: tuple[Tensor, Tensor],
    data: WorldSet,
    config: TrainConfig,
    log: Log = print,
) -> nn.ModuleDict:
    """Train the UNet (and the text encoder's layers) on samples of the cached, scaled posteriors; return the EMA."""
    generator = torch.Generator().manual_seed(config.seed + 1)
    mean, std = latents
    scheduler = noise_scheduler()
    optimizer = torch.optim.AdamW(_trainable(networks, config), weight_decay=0.0, fused=True)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(config.warmup, config.unet_steps))
    ema = copy.deepcopy(networks).requires_grad_(False)
    networks.train()
    start = time.monotonic()
    for step in range(config.unet_steps):
        indices = torch.randint(len(mean), (config.batch,), generator=generator)
        sample = mean[indices] + std[indices] * torch.randn(mean[indices].shape, generator=generator)
        ids = tokenize(tokenizer, draw_captions(data, indices.numpy(), step * config.batch, config))
        loss = denoising_loss(networks, ids, sample, scheduler, generator, config.snr_gamma)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        lr_schedule.step()
        ema_update(ema, networks, min(config.ema_decay, (1 + step) / (10 + step)))
        if step % 100 == 0 or step == config.unet_steps - 1:
            log(f"unet step {step} loss {loss.item():.4f} {time.monotonic() - start:.0f}s")
    return ema.eval()


def train_autoencoder(config: TrainConfig, scratch: Path, log: Log = print) -> None:
    """Stage 1: fit the VAE and cache the scaled posteriors of every image in ``scratch`` for stage 2."""
    torch.set_num_threads(config.threads)  # float sums, hence the weights, depend on how work is split
    start = time.monotonic()
    data = render_set(config.images, config.world_seed)
    log(f"rendered {len(data.images)} images {time.monotonic() - start:.0f}s")
    vae = untrained_components(config.seed)["vae"]
    train_vae(vae, data, config, log)
    mean, std = encode_latents(vae, data.images)
    scale = latent_scale(mean)
    vae.register_to_config(scaling_factor=scale)
    vae.save_pretrained(scratch / "vae")
    torch.save({"mean": mean * scale, "std": std * scale}, scratch / "latents.pt")
    log(f"vae saved {time.monotonic() - start:.0f}s")


def train_denoiser(config: TrainConfig, scratch: Path, out: Path, clip_weights: Path | None, log: Log = print) -> None:
    """Stage 2: train the UNet (and text encoder) on stage 1's latents and save the pipeline at ``out``; the text
    encoder starts as the tiny CLIP's text tower when ``clip_weights`` is given, else from scratch."""
    from transformers import CLIPTokenizer

    torch.set_num_threads(config.threads)
    start = time.monotonic()
    data = render_set(config.images, config.world_seed)  # the facts its captions are drawn from
    latents = torch.load(scratch / "latents.pt", weights_only=True)
    networks = untrained_components(config.seed)
    if clip_weights is not None:
        clip = torch.load(clip_weights, map_location="cpu", weights_only=True)
        state = {key: value.float() for key, value in clip_text_state(clip, MODEL_MAX_LENGTH).items()}
        networks["text_encoder"].load_state_dict(state)
    with tempfile.TemporaryDirectory() as tokenizer_dir:
        write_clip_tokenizer(Path(tokenizer_dir), BPE_FILE)
        tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    conditioned = nn.ModuleDict({"unet": networks["unet"], "text_encoder": networks["text_encoder"]})
    ema = train_unet(conditioned, tokenizer, (latents["mean"], latents["std"]), data, config, log)
    save_pipeline(out, _stage_one_vae(networks["vae"], scratch), ema["text_encoder"], ema["unet"])
    log(f"saved {out} {time.monotonic() - start:.0f}s")


def _stage_one_vae(vae: nn.Module, scratch: Path) -> nn.Module:
    """Stage 1's VAE in a freshly built module: loaded directly, its config would carry the scratch folder's path
    into the shipped files, and two builds would differ."""
    from diffusers import AutoencoderKL

    trained = AutoencoderKL.from_pretrained(scratch / "vae")
    vae.load_state_dict(trained.state_dict())
    vae.register_to_config(scaling_factor=trained.config.scaling_factor)
    return vae


def train(config: TrainConfig, out: Path, clip_weights: Path | None, log: Log = print) -> None:
    """Both stages one after the other, from the seed: the pipeline at ``out``."""
    with tempfile.TemporaryDirectory() as scratch:
        train_autoencoder(config, Path(scratch), log)
        train_denoiser(config, Path(scratch), out, clip_weights, log)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tinyworld.sd_training", description=__doc__.split("\n")[0])
    for field, default in asdict(TrainConfig()).items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(default), default=default)
    parser.add_argument("--clip", type=Path, help="the tiny CLIP's state dict, whose text tower starts the encoder")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k in asdict(TrainConfig())})
    train(config, args.out, args.clip, log=lambda line: print(line, flush=True))


if __name__ == "__main__":
    main()
