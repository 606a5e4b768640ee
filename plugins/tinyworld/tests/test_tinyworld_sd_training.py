"""Training the tiny text-to-image model: its steps learn, its output is a loadable pipeline, a seed fixes its bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline
from safetensors.torch import load_file
from tinyworld.clip import create_model, tokenizer
from tinyworld.pipeline import untrained_components
from tinyworld.sd_training import (
    TrainConfig,
    clip_text_state,
    denoising_loss,
    noise_scheduler,
    render_set,
    to_pixels,
    tokenize,
    train,
    train_unet,
    train_vae,
    vae_loss,
)
from tinyworld.vocabulary import BPE_FILE
from transformers import CLIPTokenizer

from gift_common.clip_tokenizer import write_clip_tokenizer

TINY = TrainConfig(images=8, batch=4, vae_steps=2, unet_steps=2, warmup=1, threads=1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> CLIPTokenizer:
    """The tiny pipeline's tokenizer, as the files the build writes load it: the world's own words."""
    directory = tmp_path_factory.mktemp("tokenizer")
    write_clip_tokenizer(directory, BPE_FILE)
    return CLIPTokenizer.from_pretrained(directory)


def quiet(line: str) -> None:
    pass


@pytest.fixture(scope="module")
def data():
    return render_set(8, world_seed=0)


@pytest.fixture(scope="module")
def clip_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny CLIP's state dict: training reads only its text tower."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip") / "clip.pt"
    torch.save(create_model().state_dict(), path)
    return path


def files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_vae_steps_reduce_the_reconstruction_loss(data):
    vae = untrained_components(0)["vae"]
    pixels = to_pixels(data.images)

    def loss() -> float:
        with torch.no_grad():
            return vae_loss(vae, pixels, TINY.kl_weight, torch.Generator().manual_seed(0)).item()

    before = loss()
    train_vae(vae, data, TrainConfig(batch=8, vae_steps=15, warmup=1, vae_lr=2e-3), log=quiet)
    assert loss() < 0.8 * before


def test_unet_steps_reduce_the_denoising_loss(data, world_tokenizer):
    components = untrained_components(0)
    networks = torch.nn.ModuleDict({"unet": components["unet"], "text_encoder": components["text_encoder"]})
    latents = torch.randn(8, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ids = tokenize(world_tokenizer, [f"a photo of a {colour} thing." for colour in ["red", "blue"] * 4])

    def loss() -> float:
        with torch.no_grad():
            return denoising_loss(networks, ids, latents, noise_scheduler(), torch.Generator().manual_seed(0)).item()

    before = loss()
    config = TrainConfig(batch=8, unet_steps=15, warmup=1, unet_lr=2e-3, ema_decay=0.0)
    trained = train_unet(networks, world_tokenizer, (latents, torch.zeros_like(latents)), data, config, log=quiet)
    networks.load_state_dict(trained.state_dict())
    assert loss() < 0.8 * before


def test_text_encoder_starts_as_the_clip_text_tower(clip_weights, world_tokenizer):
    clip = create_model(clip_weights).eval()
    encoder = untrained_components(0)["text_encoder"].eval()
    encoder.load_state_dict(clip_text_state(clip.state_dict(), world_tokenizer.model_max_length))
    prompts = ["a photo of a red circle.", "two blue stars on grass."]
    open_clip_ids = tokenizer()(prompts)
    with torch.no_grad():
        hidden = encoder(tokenize(world_tokenizer, prompts)).last_hidden_state
        x = clip.token_embedding(open_clip_ids) + clip.positional_embedding
        expected = clip.ln_final(clip.transformer(x, attn_mask=clip.attn_mask))
    for row, ids in enumerate(open_clip_ids):
        length = int((ids != 0).sum())  # open_clip pads with 0, the pipeline with <|endoftext|>: compare up to it
        torch.testing.assert_close(hidden[row, :length], expected[row, :length], atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, clip_weights: Path) -> Path:
    out = tmp_path_factory.mktemp("sd") / "model"
    train(TINY, out, clip_weights, log=quiet)
    return out


def test_saved_pipeline_loads_like_stable_diffusion_and_draws_32px(trained):
    pipeline = DiffusionPipeline.from_pretrained(trained, local_files_only=True)
    pipeline.set_progress_bar_config(disable=True)
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in (0, 1)]
    images = pipeline(["a red circle.", "a letter k."], num_inference_steps=3, generator=generators).images
    assert [image.size for image in images] == [(32, 32)] * 2
    assert pipeline.vae.config.scaling_factor != untrained_components(0)["vae"].config.scaling_factor
    stored = load_file(trained / "unet" / "diffusion_pytorch_model.safetensors")
    assert {tensor.dtype for tensor in stored.values()} == {torch.float16}


def test_same_seed_same_bytes_other_seed_other_weights(trained, clip_weights, tmp_path):
    train(TINY, tmp_path / "same", clip_weights, log=quiet)
    assert files(tmp_path / "same") == files(trained)
    other = TrainConfig(**{**TINY.__dict__, "seed": 1})
    train(other, tmp_path / "other", clip_weights, log=quiet)
    unet = "unet/diffusion_pytorch_model.safetensors"
    assert files(tmp_path / "other")[unet] != files(trained)[unet]
    assert np.isfinite(np.frombuffer(files(trained)[unet][-64:], np.float16)).all()
