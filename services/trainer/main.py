"""`gift train --config FILE|NAME [--set KEY.PATH=VALUE ...] [--resume]`: one run of a task sequence, in one process
or under torchrun."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from services.trainer import distributed
from services.trainer.config import load_config
from services.trainer.runner import run


def run_training(config_path: str | Path, resume: bool = False, overrides: Sequence[str] = ()) -> None:
    """Check the config (a file, or a shipped config's name, with `--set` overrides), then train and evaluate; every
    problem the user can fix is a one-line UserError."""
    config = load_config(config_path, overrides)
    with distributed.session(config.device) as device:
        run(config, resume=resume, device=device)
