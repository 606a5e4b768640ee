"""Weight manifests: written with every file's SHA-256, and a damaged or missing file is named when loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gift_common.errors import UserError
from gift_common.manifest import MANIFEST, sha256_file, verify, write_manifest
from services.trainer.models import TINY_TEST_ARCHITECTURE, create_model


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    root = tmp_path / "weights"
    (root / "sd" / "unet").mkdir(parents=True)
    (root / "sd" / "unet" / "w.bin").write_bytes(b"unet")
    (root / "sd" / "model_index.json").write_text("{}")
    torch.manual_seed(0)
    torch.save(create_model(TINY_TEST_ARCHITECTURE).state_dict(), root / "clip.pt")
    write_manifest(root, [root / "clip.pt", root / "sd"])
    return root


def test_the_manifest_lists_every_file_with_its_sha256(weights: Path) -> None:
    listed = json.loads((weights / MANIFEST).read_text())["files"]
    assert sorted(listed) == ["clip.pt", "sd/model_index.json", "sd/unet/w.bin"]
    assert listed["sd/unet/w.bin"] == sha256_file(weights / "sd" / "unet" / "w.bin")
    assert verify(weights / "sd") == 2 and verify(weights / "clip.pt") == 1 and verify(weights) == 3


def test_a_damaged_file_is_named_when_loaded(weights: Path) -> None:
    (weights / "sd" / "unet" / "w.bin").write_bytes(b"unet, changed")
    with pytest.raises(UserError, match=r"w\.bin does not match its SHA-256"):
        verify(weights / "sd")
    assert verify(weights / "clip.pt") == 1  # only what is loaded is checked


def test_the_trainer_refuses_a_damaged_checkpoint_and_loads_an_intact_one(weights: Path) -> None:
    create_model(TINY_TEST_ARCHITECTURE, weights / "clip.pt")
    data = bytearray((weights / "clip.pt").read_bytes())
    data[-100] ^= 1
    (weights / "clip.pt").write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"clip\.pt does not match"):
        create_model(TINY_TEST_ARCHITECTURE, weights / "clip.pt")


def test_a_missing_file_is_named_and_files_without_a_manifest_load_unchecked(weights: Path, tmp_path: Path) -> None:
    (weights / "sd" / "model_index.json").unlink()
    with pytest.raises(UserError, match=r"model_index\.json is listed in .* but missing"):
        verify(weights / "sd")
    loose = tmp_path / "elsewhere" / "a" / "b" / "c" / "d"
    loose.mkdir(parents=True)
    assert verify(loose) == 0
