"""TensorBoard event files of a run, in OUTPUT_DIR/tensorboard (`tensorboard --logdir OUTPUT_DIR`).

Per training step (counted over the whole run): every loss term as it enters the gradient (`loss/NAME`, and
`loss/total`), the
learning rate, throughput (`speed/images_per_s`, task and replay images) and memory (`memory/peak_gib`: the GPU's
peak allocation, or the process's peak RSS on a CPU). Per evaluation, at step k = tasks trained (0: zero-shot):
each task's accuracy (`accuracy/TASK`), the probe's mean (`pretraining/mean`), and the matrix as a picture. Once the
matrix is whole: Transfer, Avg, Last and Forget (`metrics/NAME`). A resumed run drops events past its checkpoint.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

FOLDER = "tensorboard"
SUMMARY = ("Transfer", "Avg", "Last", "Forget")
TAGS = {"lr": "lr", "loss": "loss/total"}  # the step log's keys that are no term


class Tracker:
    """One run's event files; only process 0 makes one."""

    def __init__(self, out: Path, first_step: int, device: torch.device) -> None:
        self.writer = SummaryWriter(str(out / FOLDER), purge_step=first_step or None)
        self.device = device
        self._last: float | None = None

    def step(self, step: int, log: dict[str, Any], images: int) -> None:
        """One training step's scalars; `images` is what the step consumed (throughput from the wall clock)."""
        for key, value in log.items():
            if key not in ("task_name", "task_index", "step"):
                self.writer.add_scalar(TAGS.get(key, f"loss/{key}"), value, step)
        now = time.perf_counter()
        if self._last is not None:
            self.writer.add_scalar("speed/images_per_s", images / max(now - self._last, 1e-9), step)
        self._last = now
        self.writer.add_scalar("memory/peak_gib", self._peak_gib(), step)

    def report(self, result: dict[str, Any], matrix_png: Path) -> None:
        """The latest evaluation of reports.summary's `result` at step k = tasks trained, the matrix picture as
        reports.py drew it, and, once the matrix is whole, the four metrics."""
        k = len(result["accuracy"])
        row = result["accuracy"][-1] if k else result["zero_shot"]
        for name, accuracy in zip(result["tasks"], row or [], strict=False):
            self.writer.add_scalar(f"accuracy/{name}", accuracy, k)
        probe = result["pretraining"][-1] if k and result["pretraining"] else result["pretraining_zero_shot"]
        if probe is not None:
            self.writer.add_scalar("pretraining/mean", probe, k)
        if matrix_png.exists():
            picture = np.asarray(Image.open(matrix_png).convert("RGB"))
            self.writer.add_image("accuracy_matrix", picture, k, dataformats="HWC")
        for key in SUMMARY:
            if result.get(key) is not None:
                self.writer.add_scalar(f"metrics/{key}", result[key], k)
        self.writer.flush()
        self._last = None  # the evaluation's time is no training step's

    def close(self) -> None:
        self.writer.close()

    def _peak_gib(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**30
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return peak / (2**30 if sys.platform == "darwin" else 2**20)
