"""`gift train --config FILE|NAME [--resume]`: one run of a task sequence, in one process or under torchrun."""

from __future__ import annotations

from pathlib import Path

from services.trainer import distributed
from services.trainer.config import load_config
from services.trainer.runner import run


def run_training(config_path: str | Path, resume: bool = False) -> None:
    """Check the config (a file, or a shipped config's name), then train and evaluate; every problem the user can fix
    is a one-line UserError."""
    config = load_config(config_path)
    with distributed.session(config.device) as device:
        run(config, resume=resume, device=device)
