"""Methods as plugins: a distribution that registers a method under `gift.methods` is trained with by name, its
settings checked like a preset's, without a line of the trainer changed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from gift_common.errors import UserError
from services.testing.trainer import write_tiny_arch
from services.trainer.config import load_config
from services.trainer.main import run_training
from services.trainer.registries import METHODS

# One module and one entry point: a method of the task loss and a pull towards the previous task's weights.
PLUGIN = """
from dataclasses import dataclass
from typing import ClassVar

from services.trainer.methods import LossTerm, TaskLoss


@dataclass(frozen=True)
class PullSettings:
    pull: float = 0.5
    label_smoothing: float = 0.1


@dataclass
class Pull(LossTerm):
    name: ClassVar[str] = "pull"

    def value(self, ctx):
        return sum(((p - ctx.anchor[n]) ** 2).sum() for n, p in ctx.params.items())


@dataclass(frozen=True)
class PullMethod:
    defaults: PullSettings = PullSettings()

    def build_terms(self, settings):
        return [TaskLoss(1.0, settings.label_smoothing), Pull(settings.pull)]


METHOD = PullMethod()
"""


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plugin as pip leaves a distribution: a module and its dist-info (with entry_points.txt) on sys.path."""
    site = tmp_path / "site"
    info = site / "gift_pull_method-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "gift_pull_method.py").write_text(PLUGIN)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gift-pull-method\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[gift.methods]\npull = gift_pull_method:METHOD\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(METHODS, "_entry_points", None)  # the registry reads entry points again, as a new process
    monkeypatch.setattr(METHODS, "_loaded", {})


def config_file(folder: Path, method: dict) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name, color in (("red", (220, 40, 40)), ("blue", (40, 40, 220))):
            (folder / "data" / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(4):
                pixels = np.clip(np.array(color) + rng.normal(0, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / "data" / split / name / f"{i}.png")
    write_tiny_arch(folder)
    config = {
        "output_dir": "run",
        "model": {"architecture": "gift-test-tiny.json"},
        "method": method,
        "training": {"iterations": 3, "warmup": 1, "batch_size": 4, "lr": 1e-3, "num_workers": 0},
        "evaluation": {"batch_size": 8, "num_workers": 0},
        "progress": False,
        "tasks": [{"dataset": {"type": "imagefolder", "root": "data"}}],
    }
    (folder / "run.yaml").write_text(yaml.safe_dump(config))
    return folder / "run.yaml"


def test_a_method_a_plugin_registers_trains_with_its_terms(installed: None, tmp_path: Path) -> None:
    path = config_file(tmp_path, {"preset": "pull", "overrides": {"pull": 2.0}})
    assert "pull" in METHODS.names() and "gift" in METHODS.names()
    assert load_config(path).method.settings().pull == 2.0
    run_training(path)
    log = [json.loads(line) for line in (tmp_path / "run" / "losses.jsonl").read_text().splitlines()]
    assert len(log) == 3 and all({"task", "pull", "loss"} <= set(entry) for entry in log)
    assert "distill" not in log[0] and json.loads((tmp_path / "run" / "metrics.json").read_text())["complete"]


def test_a_plugin_methods_settings_are_checked_like_a_presets(installed: None, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"method\.overrides: unknown setting bogus; known: pull, label_smoothing"):
        load_config(config_file(tmp_path, {"preset": "pull", "overrides": {"bogus": 1}}))
    with pytest.raises(UserError, match=r"method\.overrides: .*pull.*valid number"):
        load_config(config_file(tmp_path, {"preset": "pull", "overrides": {"pull": "strong"}}))
