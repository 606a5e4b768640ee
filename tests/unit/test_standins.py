"""Stand-ins load through the real code paths and carry their marker; full size is checked in a slow test."""

from __future__ import annotations

from pathlib import Path

import open_clip
import pytest
import torch
from diffusers import DiffusionPipeline
from safetensors import safe_open

from gift_common.stand_in import MARKER, is_stand_in, write_marker
from services.testing import standins

# SD 1.5's published parameter counts: UNet, VAE, CLIP ViT-L/14 text tower.
SD15_PARAMETERS = {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}


def test_marker_in_a_folder_and_beside_a_file(tmp_path: Path) -> None:
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"x")
    assert not is_stand_in(tmp_path) and not is_stand_in(weights) and not is_stand_in(None)
    write_marker(weights, "a test")
    assert is_stand_in(weights) and (tmp_path / f"model.bin.{MARKER}").is_file() and not is_stand_in(tmp_path)
    write_marker(tmp_path, "a test")
    assert is_stand_in(tmp_path) and is_stand_in(tmp_path / "unet")  # a component folder of a marked pipeline


def test_written_standins_load_as_real_weights_do(tiny_standins: dict[str, Path]) -> None:
    sd, vit = tiny_standins.values()
    assert is_stand_in(sd) and is_stand_in(vit)
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
    model = open_clip.create_model("RN50", pretrained=str(vit))  # the fixture's stand-in for ViT-B-16-quickgelu
    assert torch.equal(model.state_dict()["logit_scale"], torch.load(vit)["logit_scale"])
    assert not list(sd.parent.glob(".*"))  # no scratch folders left behind


def test_a_complete_standin_is_kept_and_a_killed_write_leaves_nothing(tmp_path: Path) -> None:
    def killed(scratch: Path) -> None:
        (scratch / "half-written").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        standins._write_atomically(tmp_path / "sd", killed)
    assert not list(tmp_path.iterdir())
    standins._write_atomically(tmp_path / "sd", lambda d: write_marker(d, "a test"))
    assert standins._write_atomically(tmp_path / "sd", killed) == tmp_path / "sd"  # kept: not written again


def test_an_existing_folder_that_is_not_a_stand_in_is_refused(tmp_path: Path) -> None:
    (tmp_path / standins.SD15_NAME).mkdir()
    with pytest.raises(FileExistsError, match="not a stand-in"):
        standins.write_standins(tmp_path)


@pytest.mark.slow
def test_full_size_standins_have_the_published_architectures(tmp_path: Path) -> None:
    paths = standins.write_standins(tmp_path)
    pipeline = DiffusionPipeline.from_pretrained(paths[standins.SD15_NAME], local_files_only=True)
    counts = {name: sum(p.numel() for p in getattr(pipeline, name).parameters()) for name in SD15_PARAMETERS}
    assert counts == SD15_PARAMETERS
    assert type(pipeline).__name__ == "StableDiffusionPipeline"
    with safe_open(paths[standins.SD15_NAME] / "unet" / "diffusion_pytorch_model.safetensors", "pt") as stored:
        assert stored.get_slice("conv_in.weight").get_dtype() == "F16"  # half the disk; loaders cast it up
    model = open_clip.create_model(standins.VIT_NAME, pretrained=str(paths[standins.VIT_NAME]))
    assert model.visual.image_size == (224, 224) and sum(p.numel() for p in model.parameters()) == 149_620_737


def test_a_run_on_standins_says_so_first_in_its_reports() -> None:
    from services.trainer import reports

    weights = "/models/ViT-B-16-quickgelu/open_clip_pytorch_model.bin"
    result = reports.summary(reports.Results(["a"], rows=[[50.0]], stand_ins=[weights]))
    assert next(iter(result)) == "stand_in" and "STAND-IN" in result["stand_in"]
    assert reports.markdown_table(result).splitlines()[0].startswith("**STAND-IN WEIGHTS")
    assert weights in reports.markdown_table(result).splitlines()[0]
    assert "stand_in" not in reports.summary(reports.Results(["a"], rows=[[50.0]]))
