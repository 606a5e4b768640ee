"""Several `gift train` runs as child processes, watched through one progress view.

The demo and the tiny world's experiments start runs this way: each run is a real `gift train --config` process
(its own log, its own output folder), so a run in the demo is exactly what a user would run by hand, and a failed
run is reported with the end of its log instead of taking the others down silently.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from gift_common.errors import UserError
from services.stack import Process
from services.trainer.config import parse_config
from services.trainer.runner import LOSSES

POLL_SECONDS = 1.0


@dataclass
class Run:
    """A started `gift train` process and what its progress is measured by."""

    name: str
    out: Path
    process: Process
    total_steps: int

    def steps_done(self) -> int:
        """Lines of the loss log: one per training step taken so far."""
        try:
            with (self.out / LOSSES).open("rb") as file:
                return sum(1 for _ in file)
        except FileNotFoundError:
            return 0

    def metrics(self) -> dict[str, Any]:
        return json.loads((self.out / "metrics.json").read_text())


def start_run(
    name: str, config: Mapping[str, Any], folder: Path, env: Mapping[str, str] | None = None, resume: bool = False
) -> Run:
    """Write ``config`` (checked first, so a mistake is named before anything starts) and start `gift train`;
    with ``resume``, a run stopped earlier continues from its checkpoint."""
    checked = parse_config(dict(config), base=folder, source=f"run {name}")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    total = sum(checked.schedule(task)["iterations"] for task in checked.tasks)
    args = [sys.executable, "-m", "services.cli", "train", "--config", str(path), *(["--resume"] if resume else [])]
    process = Process(name, args, folder / f"{name}.log", dict(env or {}))
    return Run(name, checked.output_dir, process, total)


def wait_for(runs: list[Run]) -> None:
    """A progress bar per run until all have ended; a failed run raises with the end of its log."""
    bars = {run.name: tqdm(total=run.total_steps, desc=run.name, unit="step", position=i, dynamic_ncols=True)
            for i, run in enumerate(runs)}  # fmt: skip
    try:
        while True:
            for run in runs:
                bar = bars[run.name]
                bar.update(run.steps_done() - bar.n)
            failed = [run for run in runs if not run.process.alive() and run.process.popen.returncode != 0]
            if failed:
                raise UserError(_failure(failed[0]))
            if not any(run.process.alive() for run in runs):
                return
            time.sleep(POLL_SECONDS)
    finally:
        for bar in bars.values():
            bar.close()


def stop_all(runs: list[Run]) -> None:
    for run in runs:
        run.process.stop()


def _failure(run: Run) -> str:
    tail = "\n".join(run.process.log.read_text(errors="replace").strip().splitlines()[-15:])
    return f"run {run.name} failed (exit {run.process.popen.returncode}); the end of {run.process.log}:\n{tail}"
