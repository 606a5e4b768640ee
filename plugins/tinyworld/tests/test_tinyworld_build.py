"""The rebuild command: every stage as its own process, the same files twice, a manifest that loaders check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tinyworld import clip
from tinyworld.build import CLIP_FILE, CONFIG_FILE, REPORT_DIR, SD_DIR, build
from tinyworld.clip import PretrainConfig
from tinyworld.sd_training import TrainConfig

from gift_common.manifest import MANIFEST, verify
from services.devices import resolve_device
from services.generator.worker.synthesis import load_model
from services.trainer.models import create_model

TINY_CLIP = PretrainConfig(steps=2, batch=8, warmup=1)
TINY_SD = TrainConfig(images=16, batch=4, vae_batch=4, vae_steps=2, unet_steps=2, warmup=1, threads=1)
TINY_REPORT = {"per_concept": 1, "steps": 2}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("build") / "weights"
    build(out, TINY_CLIP, TINY_SD, TINY_REPORT)
    return out


def test_the_build_ships_weights_a_manifest_and_a_quality_report_with_grids(built: Path) -> None:
    listed = json.loads((built / MANIFEST).read_text())["files"]
    assert CLIP_FILE in listed and f"{SD_DIR}/model_index.json" in listed
    assert verify(built) == len(listed)
    report = json.loads((built / REPORT_DIR / "quality.json").read_text())
    assert {"generated", "real", "grids"} <= set(report) and "mean" in report["generated"]
    assert all((built / REPORT_DIR / name).is_file() for name in report["grids"])
    assert not any(p.name.startswith(".") for p in built.parent.iterdir())  # the scratch folder is gone


def test_the_shipped_weights_load_through_the_trainer_and_the_worker(built: Path) -> None:
    create_model(clip.CONFIG, built / CLIP_FILE)
    model = load_model("tinyworld", built / SD_DIR, resolve_device("cpu"))
    assert (model.height, model.width) == (32, 32)


@pytest.mark.slow  # a second build: about two minutes; each stage's determinism is also tested on its own
def test_the_same_command_gives_the_same_files(built: Path, tmp_path: Path) -> None:
    build(tmp_path / "again", TINY_CLIP, TINY_SD, report=None)  # the report is not part of the weights

    def weights(root: Path) -> dict[str, str]:
        listed = json.loads((root / MANIFEST).read_text())["files"]
        return {name: sha for name, sha in listed.items() if name != CONFIG_FILE}  # it records the report settings

    assert weights(tmp_path / "again") == weights(built) and len(weights(built)) > 5
