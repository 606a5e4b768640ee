"""`gift eval --config FILE|NAME --checkpoint PATH [--tasks ...]`: any weights on any of a config's tasks.

The weights are those a run leaves after each task (`weights/NN_TASK.safetensors`) or any state dict open_clip
loads for the config's architecture; the tasks, split, templates and probe are the config's, so the figures are
those a run would measure. metrics.json and results.md are written as a run writes them, with one row.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gift_common.errors import UserError
from services.trainer import distributed
from services.trainer.config import RunConfig, load_config
from services.trainer.runner import Runner

EVALUATIONS = "eval"  # default output: OUTPUT_DIR/eval/WEIGHTS_STEM


def run_evaluation(
    config_path: str | Path,
    checkpoint: Path,
    tasks: Sequence[str] = (),
    out: Path | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Measure `checkpoint` on the config's tasks (or those named); returns metrics.json's content."""
    config = evaluation_config(load_config(config_path, overrides), checkpoint, tasks, out)
    with distributed.session(config.device) as device:
        return Runner(config, device).measure()


def evaluation_config(config: RunConfig, checkpoint: Path, tasks: Sequence[str], out: Path | None) -> RunConfig:
    """The config with the weights to measure, the tasks chosen and the output folder."""
    if not checkpoint.is_file():
        raise UserError(f"--checkpoint {checkpoint}: no such file")
    labels = [task.label for task in config.tasks]
    unknown = [name for name in tasks if name not in labels]
    if unknown:
        named = ", ".join(map(repr, unknown))
        raise UserError(f"--tasks: no task {named} in the config; its tasks: {', '.join(labels)}")
    chosen = [task for task in config.tasks if not tasks or task.label in tasks]
    model = config.model.model_copy(update={"pretrained": checkpoint})
    output = out if out is not None else config.output_dir / EVALUATIONS / checkpoint.stem
    return config.model_copy(update={"model": model, "tasks": chosen, "output_dir": output})
