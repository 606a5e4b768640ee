"""`gift sweep`: any config's methods over seeds into one page; a finished run is never run again."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from services.cli import main as cli_main
from services.experiments import plan
from services.experiments.sweep import Cell
from services.testing.trainer import write_tiny_arch


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """Two tasks of coloured squares and the tiny CLIP: FT and L2 replay nothing, so no generator is needed."""
    rng = np.random.default_rng(0)
    for task, colors in {"a": ((220, 40, 40), (40, 200, 40)), "b": ((40, 40, 220), (230, 210, 40))}.items():
        for split in ("train", "test"):
            for label, color in enumerate(colors):
                (tmp_path / task / split / str(label)).mkdir(parents=True)
                for i in range(4):
                    pixels = np.clip(np.array(color) + rng.normal(0, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
                    Image.fromarray(pixels).save(tmp_path / task / split / str(label) / f"{i}.png")
    write_tiny_arch(tmp_path)
    run = {
        "output_dir": "unused",  # each cell writes into the sweep's OUT/runs
        "model": {"architecture": "gift-test-tiny.json"},
        "method": {"preset": "ft"},
        "training": {"iterations": 2, "warmup": 1, "batch_size": 4, "lr": 1e-3, "num_workers": 0},
        "evaluation": {"batch_size": 8, "num_workers": 0},
        "tensorboard": False,
        "tasks": [{"dataset": {"type": "imagefolder", "root": task}, "classnames": ["red", "green"]}
                  for task in ("a", "b")],
    }  # fmt: skip
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    return tmp_path / "run.yaml"


def test_a_sweep_runs_each_cell_once_into_one_page(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out, lr = tmp_path / "sweep", ["--set", "training.lr=2e-3"]
    cli_main(["sweep", "--config", str(config), "--methods", "ft", "--seeds", "0", *lr, "--out", str(out)])
    page = (out / "results.md").read_text()
    assert "# run: continual fine-tuning (test splits)" in page and "## Order 1: a → b" in page
    assert "| FT | 1 |" in page and "training.lr=2e-3: 2 iterations per task, batch 4, lr 0.002" in page
    run = json.loads((out / "runs" / "order1-seed0-ft" / "config.json").read_text())
    assert (run["training"]["lr"], run["seed"], run["method"]["preset"]) == (0.002, 0, "ft")

    asked: list[list[Cell]] = []  # a second sweep, with a seed and a method more: only those run
    monkeypatch.setattr(plan, "sweep", lambda todo, *args: asked.append(list(todo)))
    cli_main(["sweep", "--config", str(config), "--methods", "ft", "l2", "--seeds", "0", "1", *lr, "--out", str(out)])
    assert asked == [[Cell(1, 1, "ft"), Cell(1, 0, "l2"), Cell(1, 1, "l2")]]
    assert "1 of 4 runs on the page already; 3 to run" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # other settings belong on another page
        cli_main(["sweep", "--config", str(config), "--methods", "ft", "--out", str(out), "--page-only"])
    assert "give this sweep its own --page" in capsys.readouterr().err
