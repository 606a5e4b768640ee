"""Model factory: JSON architectures and local checkpoints load, nothing is ever downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from services.testing.trainer import write_tiny_arch
from services.trainer.models import create_model, create_tokenizer, image_transforms


@pytest.fixture(scope="module")
def arch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_arch(tmp_path_factory.mktemp("arch"))


def test_json_architecture_and_local_checkpoint_round_trip(arch: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model(arch)
    assert model.encode_image(torch.zeros(2, 3, 32, 32)).shape == (2, 32)
    checkpoint = tmp_path / "weights.pt"
    torch.save(model.state_dict(), checkpoint)
    torch.manual_seed(1)
    loaded = create_model(arch, pretrained=checkpoint)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("pretrained", ["openai", "/nowhere/weights.pt"])
def test_pretrained_must_be_a_local_file(arch: Path, pretrained: str) -> None:
    with pytest.raises(FileNotFoundError, match="put the model's weights"):
        create_model(arch, pretrained=pretrained)


def test_remote_and_unknown_architectures_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="never downloaded"):
        create_model("hf-hub:org/some-model")
    with pytest.raises(ValueError, match="unknown architecture"):
        create_model("No-Such-Model")
    with pytest.raises(FileNotFoundError, match="architecture config"):
        create_model(tmp_path / "missing.json")


def test_tokenizer_and_transforms_follow_the_architecture(arch: Path) -> None:
    tokens = create_tokenizer(arch)(["a photo of a cat.", "a photo of a dog."])
    assert tokens.shape == (2, 77)
    train, evaluate = image_transforms(create_model(arch))
    image = Image.new("RGB", (48, 40), color=(120, 30, 200))
    assert train(image).shape == evaluate(image).shape == (3, 32, 32)
