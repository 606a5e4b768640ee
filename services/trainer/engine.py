"""The one training loop: a method is a list of loss terms, and every method runs through the same step.

Per task (METHOD.md): the student starts from θ_{t−1}; a frozen copy of θ_{t−1} is teacher and weight anchor;
`logit_scale` stays frozen; AdamW with a cosine schedule and linear warm-up, lr and iterations set per task.
Per step: replay terms backward, then task terms backward (AWC reads the first gradient), one optimiser step.
Under torchrun each backward pass ends with a gradient all-reduce (see `distributed` for why that is exact).
Under `training.precision` bf16 or fp16 the models' forward passes run under autocast and the rest in fp32
(`precision`); fp16 scales both backward passes by one loss scale and unscales once, at the optimiser step.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from gift_common.schedules import warmup_cosine
from services.trainer import distributed
from services.trainer.context import ReplayBatch, Seekable, StepContext, Task, TaskState
from services.trainer.fields import PrecisionName, TeacherMode
from services.trainer.methods import PHASES, LossTerm
from services.trainer.precision import precision_for

StepLog = dict[str, float]


def entered(batches: Iterable[Sequence[Tensor]], step: int) -> Iterable[Sequence[Tensor]]:
    """A seekable stream entered at `step`; any other iterable starts afresh (resumed runs then see other batches)."""
    return batches.from_step(step) if isinstance(batches, Seekable) else batches


def forever(batches: Iterable[Sequence[Tensor]]) -> Iterator[Sequence[Tensor]]:
    """Re-iterate a loader epoch after epoch, so a DataLoader reshuffles; `itertools.cycle` would keep every batch."""
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise ValueError("a training stream yielded no batch")


def frozen_copy(model: nn.Module) -> nn.Module:
    """A copy of the model that never trains: a task's teacher and weight anchor."""
    return copy.deepcopy(model).eval().requires_grad_(False)


class Engine:
    """Trains one model through a sequence of tasks with one method; its state is a checkpointable dict."""

    def __init__(
        self,
        model: nn.Module,
        terms: Sequence[LossTerm],
        *,
        device: torch.device | str = "cpu",
        teacher_mode: TeacherMode = "cached",
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        precision: PrecisionName = "fp32",
        progress: bool = True,
    ) -> None:
        self.precision = precision_for(precision, device)  # first: a precision the device cannot do is a UserError
        self.scaler = self.precision.grad_scaler()
        self.model = model.to(device)
        self.model.logit_scale.requires_grad_(False)
        self.terms = list(terms)
        self.device = device
        self.teacher_mode = teacher_mode
        self.betas = betas
        self.weight_decay = weight_decay
        self.progress = progress
        self.tasks_done = 0
        self.step_in_task = 0
        self.state: TaskState | None = None
        self._resume: dict[str, Any] | None = None

    def begin_task(self, task: Task) -> None:
        """Freeze θ_{t−1} (teacher and anchor), make a fresh optimiser and schedule, open the data streams."""
        if task.replay is None and any(term.phase == "replay" for term in self.terms):
            raise ValueError(f"task {task.name!r} has no replay set, and the method needs one")
        previous = frozen_copy(self.model)
        self.state = TaskState(task, self.model, previous, self.teacher_mode, self.device, self.precision)
        self.optimizer = torch.optim.AdamW(
            self.state.params.values(), lr=task.lr, betas=self.betas, weight_decay=self.weight_decay, fused=True
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(task.warmup, task.iterations))
        self.step_in_task = 0
        if self._resume is not None:
            self._restore_task(self._resume)
            self._resume = None
        self._train = forever(entered(task.train, self.step_in_task))
        self._replay = None if task.replay is None else forever(entered(task.replay.batches, self.step_in_task))

    def next_teacher(self) -> nn.Module:
        """θ_{t−1} of the task `begin_task` starts next, frozen: the model now, or the teacher a checkpoint taken
        within that task saved (the model has trained since)."""
        teacher = frozen_copy(self.model)
        if self._resume is not None:
            teacher.load_state_dict(self._resume["previous"])
        return teacher

    def compute_gradients(self, images: Tensor, labels: Tensor, replay: ReplayBatch | None = None) -> StepLog:
        """Fill `.grad` with ∇(replay terms) + ∇(task terms), in two backward passes; returns the weighted terms.

        Under fp16 both passes are scaled by the same S, so `.grad` holds S × the sum until the optimiser step
        unscales it; AWC, which reads `.grad` between the passes, divides by S itself (`ctx.grad_scale`).
        """
        ctx = StepContext(self.model, self._task_state(), images, labels, replay, self._grad_scale())
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        values: dict[str, Tensor] = {}
        for phase in PHASES:
            phase_values = {term.name: term(ctx) for term in self.terms if term.phase == phase}
            if phase_values:
                self.scaler.scale(torch.stack(list(phase_values.values())).sum()).backward()
                distributed.average_gradients(ctx.params.values())
            values |= phase_values
        stacked = torch.stack([v.detach() for v in values.values()])
        distributed.average_([stacked])  # under DDP, the log of the global batch
        logged = stacked.tolist()  # one device sync per step
        return dict(zip(values, logged, strict=True)) | {"loss": sum(logged)}

    def step(self) -> StepLog:
        """One training step on the next task and replay batches; the log has every term, the total and the lr."""
        images, labels = (t.to(self.device, non_blocking=True) for t in next(self._train))
        replay = None if self._replay is None else ReplayBatch(*next(self._replay)).to(self.device)
        lr = self.optimizer.param_groups[0]["lr"]
        log = self.compute_gradients(images, labels, replay)
        self.scaler.step(self.optimizer)  # under fp16: unscale, and skip the step if a gradient overflowed
        self.scaler.update()
        self.scheduler.step()
        self.step_in_task += 1
        return log | {"lr": lr}

    def end_task(self) -> None:
        """Let terms that keep memory across tasks (EWC) look at the learnt task, then drop the task's state."""
        state = self._task_state()
        for term in self.terms:
            term.end_task(
                StepContext(self.model, state, *(t.to(self.device) for t in batch), None, self._grad_scale())
                for batch in forever(state.task.train)
            )
        self.tasks_done += 1
        self.state = None

    def train_task(self, task: Task, on_step: Callable[[int, StepLog], None] | None = None) -> list[StepLog]:
        """All of a task's iterations (from where a restored checkpoint stopped); returns the per-step logs."""
        self.begin_task(task)
        history = []
        bar = tqdm(
            range(self.step_in_task, task.iterations),
            initial=self.step_in_task,
            total=task.iterations,
            desc=task.name,
            disable=not self.progress,
        )
        for step in bar:
            log = self.step()
            history.append(log)
            bar.set_postfix({name: f"{value:.4g}" for name, value in log.items()}, refresh=False)
            if on_step is not None:
                on_step(step, log)
        self.end_task()
        return history

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue: weights, term memories, RNG, fp16's loss scale, and the current task's
        optimiser state."""
        task = None
        if self.state is not None:
            task = {
                "previous": self.state.previous.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "step": self.step_in_task,
            }
        return {
            "model": self.model.state_dict(),
            "tasks_done": self.tasks_done,
            "terms": [term.state_dict() for term in self.terms],
            "rng": torch.get_rng_state(),
            "scaler": self.scaler.state_dict(),
            "task": task,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict`; a task in progress resumes at its step on the next `begin_task`/`train_task`.

        Seekable streams (`streams.BatchStream`) continue at the restored step; other iterables restart an epoch.
        """
        self.model.load_state_dict(state["model"])
        self.tasks_done = state["tasks_done"]
        for term, term_state in zip(self.terms, state["terms"], strict=True):
            term.load_state_dict(term_state)
        torch.set_rng_state(state["rng"])
        self.scaler.load_state_dict(state["scaler"])
        self._resume = state["task"]

    def _restore_task(self, saved: dict[str, Any]) -> None:
        self._task_state().previous.load_state_dict(saved["previous"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.step_in_task = saved["step"]

    def _grad_scale(self) -> Tensor | None:
        """fp16's current loss scale S as a device tensor (read without a host sync), or None without a scaler."""
        if not self.scaler.is_enabled():
            return None
        return self.scaler.scale(torch.ones((), device=self.device))

    def _task_state(self) -> TaskState:
        if self.state is None:
            raise RuntimeError("no task in progress: call begin_task first")
        return self.state
