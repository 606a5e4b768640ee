"""The default model must load like a real Stable Diffusion directory and be reproducible to the byte."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline
from tinyworld import pipeline as tinyworld_pipeline
from tinyworld.pipeline import UNTRAINED_NAME, build_untrained_pipeline, default_model_dir

PROMPTS = ["a red ball on grass", "two blue cubes"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-sd")
    build_untrained_pipeline(directory, seed=0)
    return directory


@pytest.fixture(scope="module")
def loaded(built: Path) -> StableDiffusionPipeline:
    pipe = DiffusionPipeline.from_pretrained(built, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe: StableDiffusionPipeline, seeds: list[int]) -> np.ndarray:
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
    return pipe(PROMPTS, num_inference_steps=2, generator=generators, output_type="np").images


def files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_loads_as_stable_diffusion_and_generates_native_size(loaded):
    assert isinstance(loaded, StableDiffusionPipeline)
    assert loaded.safety_checker is None
    assert loaded.tokenizer.bos_token_id == loaded.text_encoder.config.bos_token_id
    assert loaded.tokenizer.pad_token_id == loaded.text_encoder.config.pad_token_id == loaded.tokenizer.eos_token_id
    images = generate(loaded, [0, 1])
    assert images.shape == (2, 32, 32, 3)
    assert np.isfinite(images).all()


def test_same_seed_same_pixels_other_seed_other_pixels(loaded):
    first, again, other = generate(loaded, [0, 1]), generate(loaded, [0, 1]), generate(loaded, [2, 1])
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first[0], other[0])
    np.testing.assert_allclose(first[1], other[1], atol=2 / 255)  # an image does not depend on its batch mates


def test_saved_layout_is_a_stable_diffusion_directory(built):
    names = set(files(built))
    weights = ["unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"]
    assert {"model_index.json", "text_encoder/model.safetensors", *weights} <= names
    assert {n for n in names if n.startswith("tokenizer/")} == {
        f"tokenizer/{n}" for n in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")
    }
    assert sum(len(data) for data in files(built).values()) < 25_000_000


def test_build_is_byte_identical_for_a_seed(built, tmp_path):
    build_untrained_pipeline(tmp_path / "same", seed=0)
    build_untrained_pipeline(tmp_path / "other", seed=1)
    assert files(tmp_path / "same") == files(built)
    other = files(tmp_path / "other")
    assert other["unet/diffusion_pytorch_model.safetensors"] != files(built)["unet/diffusion_pytorch_model.safetensors"]


def fake_build(calls: list[Path]):
    def build(directory: Path, seed: int = 0) -> None:
        calls.append(Path(directory))
        (Path(directory) / "model_index.json").write_text("{}")

    return build


def test_default_model_dir_builds_once_then_reuses(tmp_path, monkeypatch):
    calls: list[Path] = []
    monkeypatch.setattr(tinyworld_pipeline, "TRAINED_DIR", tmp_path / "no-trained-weights")
    monkeypatch.setattr(tinyworld_pipeline, "build_untrained_pipeline", fake_build(calls))
    first = default_model_dir(tmp_path / "home")
    assert first == tmp_path / "home" / "models" / UNTRAINED_NAME
    assert (first / "model_index.json").is_file()
    assert default_model_dir(tmp_path / "home") == first
    assert len(calls) == 1
    assert [p.name for p in first.parent.iterdir()] == [UNTRAINED_NAME]  # no scratch directory left behind


def test_default_model_dir_keeps_a_concurrent_build(tmp_path, monkeypatch):
    target = tmp_path / "models" / UNTRAINED_NAME

    def racing_build(directory: Path, seed: int = 0) -> None:
        (directory / "model_index.json").write_text("mine")
        target.mkdir()
        (target / "model_index.json").write_text("theirs")

    monkeypatch.setattr(tinyworld_pipeline, "TRAINED_DIR", tmp_path / "no-trained-weights")
    monkeypatch.setattr(tinyworld_pipeline, "build_untrained_pipeline", racing_build)
    assert default_model_dir(tmp_path) == target
    assert (target / "model_index.json").read_text() == "theirs"
    assert [p.name for p in target.parent.iterdir()] == [UNTRAINED_NAME]


def test_default_model_dir_prefers_shipped_trained_weights(tmp_path, monkeypatch):
    trained = tmp_path / "weights" / "sd"
    trained.mkdir(parents=True)
    (trained / "model_index.json").write_text("{}")
    monkeypatch.setattr(tinyworld_pipeline, "TRAINED_DIR", trained)
    assert default_model_dir(tmp_path / "home") == trained
    assert not (tmp_path / "home").exists()
