"""What a run reports as it goes: TensorBoard event files in OUTPUT_DIR/tensorboard (`tensorboard --logdir
OUTPUT_DIR`), and, where the config asks, a Weights & Biases run with the same values (OUTPUT_DIR/wandb).

Per training step (counted over the whole run, `step` in W&B): every loss term as it enters the gradient
(`loss/NAME`, and `loss/total`), the learning rate, throughput (`speed/images_per_s`, task and replay images) and
memory (`memory/peak_gib`: the GPU's peak allocation, or the process's peak RSS on a CPU). Per evaluation, at
k = tasks trained (`tasks_trained` in W&B; 0: zero-shot): each task's accuracy (`accuracy/TASK`), the probe's mean
(`pretraining/mean`), and the matrix as a picture (`accuracy_matrix`). Before task t trains, at k = t - 1, a grid of
its first synthetic pairs with their prompts (`synthetic/TASK`). Once the matrix is whole: Transfer, Avg, Last and
Forget (`metrics/NAME`). A resumed run drops TensorBoard events past its checkpoint and goes on in the same W&B run.
"""

from __future__ import annotations

import io
import resource
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from gift_common.contact_sheet import contact_sheet
from gift_common.errors import UserError
from gift_common.files import atomic_write

if TYPE_CHECKING:
    from services.trainer.config import RunConfig

FOLDER = "tensorboard"
WANDB_FOLDER = "wandb"
WANDB_RUN_ID = "wandb-run-id"  # in OUTPUT_DIR: a resumed run logs into the run it started
SUMMARY = ("Transfer", "Avg", "Last", "Forget")
TAGS = {"lr": "lr", "loss": "loss/total"}  # the step log's keys that are no term
GRID_PAIRS = 16  # synthetic pairs shown per task


class Sink(Protocol):
    """Where the values go. `axis` names the step: `step` (training steps) or `tasks_trained` (evaluations)."""

    def scalars(self, values: dict[str, float], axis: str, step: int) -> None: ...

    def image(self, tag: str, picture: np.ndarray, axis: str, step: int) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class TensorBoardSink:
    def __init__(self, out: Path, first_step: int) -> None:
        self.writer = SummaryWriter(str(out / FOLDER), purge_step=first_step or None)

    def scalars(self, values: dict[str, float], axis: str, step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def image(self, tag: str, picture: np.ndarray, axis: str, step: int) -> None:
        self.writer.add_image(tag, picture, step, dataformats="HWC")

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """One W&B run per output folder. Its values carry their own axis (define_metric), as W&B's own step must only
    grow and evaluations count tasks, not steps."""

    def __init__(self, out: Path, config: RunConfig) -> None:
        try:
            import wandb
        except ImportError:
            raise UserError("wandb.mode is set but wandb is not installed: pip install 'gift[wandb]'") from None
        id_file = out / WANDB_RUN_ID
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
        atomic_write(id_file, run_id.encode())
        (out / WANDB_FOLDER).mkdir(exist_ok=True)
        settings = config.wandb
        self.wandb = wandb
        self.run = wandb.init(
            mode=settings.mode, project=settings.project, entity=settings.entity, dir=str(out), id=run_id,
            resume="allow", name=out.name, config=config.model_dump(mode="json"),
            settings=wandb.Settings(console="off", silent=True),
        )  # fmt: skip
        for axis, patterns in {"step": ("lr", "loss/*", "speed/*", "memory/*"),
                               "tasks_trained": ("accuracy/*", "pretraining/*", "metrics/*", "accuracy_matrix",
                                                 "synthetic/*")}.items():  # fmt: skip
            self.run.define_metric(axis)
            for pattern in patterns:
                self.run.define_metric(pattern, step_metric=axis)

    def scalars(self, values: dict[str, float], axis: str, step: int) -> None:
        self.run.log({axis: step, **values})

    def image(self, tag: str, picture: np.ndarray, axis: str, step: int) -> None:
        self.run.log({axis: step, tag: self.wandb.Image(picture)})

    def flush(self) -> None:
        """W&B's own service writes as values come."""

    def close(self) -> None:
        self.run.finish()


class Tracker:
    """One run's reports to every sink the config asks for; only process 0 makes one."""

    def __init__(self, sinks: Sequence[Sink], device: torch.device) -> None:
        self.sinks, self.device = list(sinks), device
        self._last: float | None = None

    @classmethod
    def for_run(cls, out: Path, first_step: int, device: torch.device, config: RunConfig) -> Tracker | None:
        """The config's sinks (TensorBoard unless `tensorboard: false`, W&B where `wandb.mode` is not off)."""
        sinks: list[Sink] = [TensorBoardSink(out, first_step)] if config.tensorboard else []
        if config.wandb.mode != "off":
            sinks.append(WandbSink(out, config))
        return cls(sinks, device) if sinks else None

    def step(self, step: int, log: dict[str, Any], images: int) -> None:
        """One training step's scalars; `images` is what the step consumed (throughput from the wall clock)."""
        values = {TAGS.get(key, f"loss/{key}"): value for key, value in log.items()
                  if key not in ("task_name", "task_index", "step")}  # fmt: skip
        now = time.perf_counter()
        if self._last is not None:
            values["speed/images_per_s"] = images / max(now - self._last, 1e-9)
        self._last = now
        values["memory/peak_gib"] = self._peak_gib()
        self._scalars(values, "step", step)

    def report(self, result: dict[str, Any], matrix_png: Path) -> None:
        """The latest evaluation of reports.summary's `result` at k = tasks trained, the matrix picture as
        reports.py drew it, and, once the matrix is whole, the four metrics."""
        k = len(result["accuracy"])
        row = result["accuracy"][-1] if k else result["zero_shot"]
        values = {f"accuracy/{name}": accuracy for name, accuracy in zip(result["tasks"], row or [], strict=False)}
        probe = result["pretraining"][-1] if k and result["pretraining"] else result["pretraining_zero_shot"]
        if probe is not None:
            values["pretraining/mean"] = probe
        values |= {f"metrics/{key}": result[key] for key in SUMMARY if result.get(key) is not None}
        self._scalars(values, "tasks_trained", k)
        if matrix_png.exists():
            self._image("accuracy_matrix", np.asarray(Image.open(matrix_png).convert("RGB")), k)
        self._flush()

    def samples(self, task: str, k: int, images: Sequence[Path] | np.ndarray, prompts: Sequence[str]) -> None:
        """A grid of the task's first synthetic pairs (image files or uint8 arrays) with their prompts."""
        shown = min(GRID_PAIRS, len(images))
        pngs = [_png(images[i]) for i in range(shown)]
        sheet = contact_sheet(pngs, list(prompts[:shown]), columns=min(8, shown) or 1)
        self._image(f"synthetic/{task}", np.asarray(sheet), k)
        self._flush()

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

    def _flush(self) -> None:
        for sink in self.sinks:
            sink.flush()
        self._last = None  # the time spent here is no training step's

    def _scalars(self, values: dict[str, float], axis: str, step: int) -> None:
        for sink in self.sinks:
            sink.scalars(values, axis, step)

    def _image(self, tag: str, picture: np.ndarray, k: int) -> None:
        for sink in self.sinks:
            sink.image(tag, picture, "tasks_trained", k)

    def _peak_gib(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**30
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return peak / (2**30 if sys.platform == "darwin" else 2**20)


def _png(image: Path | np.ndarray) -> bytes:
    if isinstance(image, np.ndarray):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        return buffer.getvalue()
    return Path(image).read_bytes()
