"""Stand-ins load through the real code paths and carry their marker; full size is checked in a slow test."""

from __future__ import annotations

from pathlib import Path

import open_clip
import pytest
import torch
from diffusers import DiffusionPipeline

from gift_common.stand_in import MARKER, is_stand_in, write_marker
from services.rehearsal import standins

# SD 1.5's published parameter counts: UNet, VAE, CLIP ViT-L/14 text tower.
SD15_PARAMETERS = {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}


@pytest.fixture
def shrunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """SD 1.5's layout cut to toy widths, so the writer's whole path runs in seconds."""
    monkeypatch.setitem(standins.UNET_CONFIG, "block_out_channels", [32, 32, 64, 64])
    monkeypatch.setitem(standins.UNET_CONFIG, "norm_num_groups", 8)
    monkeypatch.setitem(standins.UNET_CONFIG, "sample_size", 8)
    monkeypatch.setitem(standins.VAE_CONFIG, "block_out_channels", [8, 8, 16, 16])
    monkeypatch.setitem(standins.VAE_CONFIG, "norm_num_groups", 4)
    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    for key, value in text.items():
        monkeypatch.setitem(standins.TEXT_ENCODER_CONFIG, key, value)
    monkeypatch.setitem(standins.UNET_CONFIG, "cross_attention_dim", 32)
    monkeypatch.setattr(standins, "VIT_NAME", "RN50")  # the smallest built-in architecture; the call is the same


def test_marker_in_a_folder_and_beside_a_file(tmp_path: Path) -> None:
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"x")
    assert not is_stand_in(tmp_path) and not is_stand_in(weights) and not is_stand_in(None)
    write_marker(weights, "a test")
    assert is_stand_in(weights) and (tmp_path / f"model.bin.{MARKER}").is_file() and not is_stand_in(tmp_path)
    write_marker(tmp_path, "a test")
    assert is_stand_in(tmp_path) and is_stand_in(tmp_path / "unet")  # a component folder of a marked pipeline


def test_written_standins_load_as_real_weights_do(tmp_path: Path, shrunk: None) -> None:
    paths = standins.write_standins(tmp_path)
    sd = paths[standins.SD15_NAME]
    assert is_stand_in(sd) and is_stand_in(paths[standins.VIT_NAME])
    assert {p.name for p in sd.iterdir()} >= {
        "model_index.json",
        "unet",
        "vae",
        "text_encoder",
        "tokenizer",
        "scheduler",
    }
    pipeline = DiffusionPipeline.from_pretrained(sd, local_files_only=True, dtype=torch.float32)
    assert pipeline.unet.dtype == torch.float32 and pipeline.unet.config.cross_attention_dim == 32
    assert pipeline.tokenizer("a cat").input_ids == [49406, 320, 2368, 49407]
    model = open_clip.create_model("RN50", pretrained=str(paths[standins.VIT_NAME]))
    assert torch.equal(model.state_dict()["logit_scale"], torch.load(paths[standins.VIT_NAME])["logit_scale"])
    assert standins.write_standins(tmp_path) == paths  # complete stand-ins are kept, not rewritten
    assert not list(tmp_path.glob(".*"))  # no scratch folders left behind


def test_an_existing_folder_that_is_not_a_stand_in_is_refused(tmp_path: Path, shrunk: None) -> None:
    (tmp_path / standins.SD15_NAME).mkdir()
    with pytest.raises(FileExistsError, match="not a stand-in"):
        standins.write_standins(tmp_path)


@pytest.mark.slow
def test_full_size_standins_have_the_published_architectures(tmp_path: Path) -> None:
    paths = standins.write_standins(tmp_path)
    pipeline = DiffusionPipeline.from_pretrained(paths[standins.SD15_NAME], local_files_only=True)
    counts = {name: sum(p.numel() for p in getattr(pipeline, name).parameters()) for name in SD15_PARAMETERS}
    assert counts == SD15_PARAMETERS
    assert type(pipeline).__name__ == "StableDiffusionPipeline" and pipeline.unet.dtype == torch.float16
    model = open_clip.create_model(standins.VIT_NAME, pretrained=str(paths[standins.VIT_NAME]))
    assert model.visual.image_size == (224, 224) and sum(p.numel() for p in model.parameters()) == 149_620_737
