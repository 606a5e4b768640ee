"""`gift sweep`: any config's methods over seeds into one page; a finished run is never run again."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from gift_common.errors import UserError
from services.cli import main as cli_main
from services.experiments import plan
from services.experiments.config_sweep import config_plan
from services.experiments.sweep import Cell
from services.testing.trainer import write_tiny_arch
from services.trainer.config import parse_config


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


def test_each_cell_runs_the_resolved_config_with_its_method_and_seed(config: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    sweep = config_plan(str(config), ["training.lr=2e-3"], ["ft", "l2"], [0, 1], out, local=False)
    assert sweep.cells == [Cell(1, 0, "ft"), Cell(1, 1, "ft"), Cell(1, 0, "l2"), Cell(1, 1, "l2")]
    assert sweep.orders == {1: ["a", "b"]} and sweep.split == "test" and not sweep.local_generator
    checked = parse_config(sweep.config_of(Cell(1, 1, "l2"), "http://api:1"), base=tmp_path / "elsewhere")
    assert (checked.method.preset, checked.seed, checked.synthetic.seed, checked.training.lr) == ("l2", 1, 1, 2e-3)
    assert checked.output_dir == out / "runs" / "order1-seed1-l2"
    assert checked.tasks[0].dataset.root == config.parent / "a"  # paths absolute: the run reads them anywhere
    assert checked.synthetic.generator_url == "http://api:1"
    with pytest.raises(UserError, match="--methods: unknown method sgd; registered: "):
        config_plan(str(config), [], ["sgd"], [0], out, local=False)


def test_a_finished_run_is_not_run_again_and_goes_onto_the_page(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out, lr = tmp_path / "sweep", ["training.lr=2e-3"]
    finished = Cell(1, 0, "ft")  # a run folder as `gift train` leaves it: its config and complete metrics
    folder = out / "runs" / finished.name
    folder.mkdir(parents=True)
    run = config_plan(str(config), lr, ["ft"], [0], out, local=False).config_of(finished, None)
    (folder / "config.json").write_text(parse_config(run, base=folder).model_dump_json())
    (folder / "metrics.json").write_text(json.dumps({
        "complete": True, "tasks": ["a", "b"], "accuracy": [[90.0, 50.0], [80.0, 95.0]], "zero_shot": [50.0, 40.0],
        "Transfer": 50.0, "Avg": 78.8, "Last": 87.5, "Forget": 10.0, "pretraining": [], "pretraining_zero_shot": None,
    }))  # fmt: skip
    asked: list[list[Cell]] = []
    monkeypatch.setattr(plan, "sweep", lambda todo, *args: asked.append(list(todo)))
    cli_main(["sweep", "--config", str(config), "--methods", "ft", "l2", "--set", *lr, "--out", str(out)])
    assert asked == [[Cell(1, 0, "l2")]]
    page = capsys.readouterr().out
    assert "sweep: 1 of 2 runs on the page already; 1 to run" in page
    assert "| FT | 1 | 50.0 ± 0.0 | 78.8 ± 0.0 | 87.5 ± 0.0 | 10.0 ± 0.0 | 92.5 ± 0.0 |" in page  # no probe column


@pytest.mark.slow  # a real `gift train` process: 18 s on the shared 2-core machine
def test_a_sweep_runs_its_cells_as_gift_train_processes(config: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    cli_main(["sweep", "--config", str(config), "--methods", "ft", "--set", "training.lr=2e-3", "--out", str(out)])
    page = (out / "results.md").read_text()
    assert "# run: continual fine-tuning (test splits)" in page and "## Order 1: a → b" in page
    assert "| FT | 1 |" in page and "training.lr=2e-3: 2 iterations per task, batch 4, lr 0.002" in page
    run = json.loads((out / "runs" / "order1-seed0-ft" / "config.json").read_text())
    assert (run["training"]["lr"], run["seed"], run["method"]["preset"]) == (0.002, 0, "ft")
