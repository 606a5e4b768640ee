"""The rehearsal runs the MTIL configs as they are, pointed at the fixtures and the stand-ins, only sizes changed
(and gradient checkpointing, which changes memory, not the gradients)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from services.rehearsal.run import Report, Sizes, _watch, rehearsal_config
from services.runs import Run
from services.stack import Process
from services.trainer import configs as shipped_configs
from services.trainer.compose import compose
from services.trainer.config import parse_config
from services.trainer.runner import LOSSES

PATHS = {("output_dir",), ("model", "pretrained"), ("synthetic", "generator_url"), ("synthetic", "cache_dir")}
SIZES = {("training", "iterations"), ("training", "warmup"), ("training", "batch_size"), ("training", "num_workers"),
         ("synthetic", "size"), ("synthetic", "steps"), ("synthetic", "height"), ("synthetic", "width"),
         ("evaluation", "batch_size"), ("evaluation", "num_workers"), ("evaluation", "templates"),
         ("training", "grad_checkpointing"), ("progress",)}  # fmt: skip


def changed(before: object, after: object, at: tuple = ()) -> set[tuple]:
    """The key paths whose values differ (list positions count as keys)."""
    if isinstance(before, dict) and isinstance(after, dict):
        return {path for key in before.keys() | after.keys()
                for path in changed(before.get(key), after.get(key), (*at, key))}  # fmt: skip
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return {path for i, pair in enumerate(zip(before, after, strict=True)) for path in changed(*pair, (*at, i))}
    return set() if before == after else {at}


@pytest.mark.parametrize("order", [1, 2])
def test_only_paths_and_sizes_change(tmp_path: Path, order: int) -> None:
    original, _ = compose(shipped_configs.path(f"mtil_order{order}"))
    vit = tmp_path / "models" / "ViT-B-16-quickgelu" / "open_clip_pytorch_model.bin"
    config = rehearsal_config(order, tmp_path, vit, "http://127.0.0.1:1", Sizes())
    roots = {("tasks", i, "dataset", "root") for i in range(len(original["tasks"]))}
    assert changed(original, config) <= PATHS | SIZES | roots
    assert all(task["dataset"]["root"] == str(tmp_path / "data" / "mtil") for task in config["tasks"])
    checked = parse_config(config, base=tmp_path, source="rehearsal")
    assert [task.dataset.type for task in checked.tasks] == [task["dataset"]["type"] for task in original["tasks"]]
    assert checked.model.architecture == "ViT-B-16-quickgelu" and checked.synthetic.model == "sd15"


def test_watch_shows_steps_and_records_peak(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The trainer's stage is the rehearsal's longest (tens of minutes): the user sees its steps as they come."""
    losses = tmp_path / "run" / LOSSES
    losses.parent.mkdir()
    writer = f"import time\nfor i in range(3):\n    open({str(losses)!r}, 'a').write('{{}}\\n'); time.sleep(1.0)\n"
    run = Run("trainer", losses.parent, Process("trainer", [sys.executable, "-c", writer], tmp_path / "t.log"), 3)
    report = Report(
        tmp_path, {"complete": False, "order": 2, "sizes": {}, "trainer_threads": 1, "machine": "cpu", "seconds": {}}
    )
    _watch(run, report, "trainer_before_kill")
    assert report.data["trainer_before_kill"]["steps_done"] == 3
    assert report.data["trainer_before_kill"]["peak_rss_gib"] > 0
    assert "trainer_before_kill: 100%" in capsys.readouterr().err
    assert "trainer_before_kill: 3 steps" in (tmp_path / "rehearsal.md").read_text()
