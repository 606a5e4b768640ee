"""What a task and a training step see: the inputs, θ_{t−1}, the teacher's embeddings and the shared logits.

The engine does not know where batches come from: task data is any re-iterable of (images, labels), replay data any
re-iterable of (images, tokens, index), synthetic or real; a stream with `from_step` (a `Seekable`) is entered at the
right batch when a run resumes. Loss terms read what they need from a `StepContext`, which computes each piece at
most once per step and only if some term asks for it. Under DDP the replay quantities span the global batch.
The models' forward passes run in the task's precision; every embedding leaves them in fp32 (`embed`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from typing import NamedTuple, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from services.trainer import distributed, losses
from services.trainer.fields import TeacherMode
from services.trainer.precision import FP32, Precision


class ReplayBatch(NamedTuple):
    """B replay pairs: images (evaluation preprocessing, no augmentation), prompt tokens, and their set indices."""

    images: Tensor
    tokens: Tensor
    index: Tensor

    def to(self, device: torch.device | str) -> ReplayBatch:
        return ReplayBatch(*(t.to(device, non_blocking=True) for t in self))


@runtime_checkable
class Seekable(Protocol):
    """A training stream that can start at any step, so that a resumed run reads the batches it would have read."""

    def from_step(self, step: int) -> Iterable[Sequence[Tensor]]: ...


@dataclass
class ReplaySet:
    """The replay pairs of one task, from the generator or from real images alike.

    `batches` is the training stream (re-iterated when exhausted, e.g. a shuffled DataLoader); `ordered` yields
    every pair once and is read a single time per task to fill the teacher's embedding cache, unless `teacher`
    holds that cache already (synthetic.filter computed it to choose the pairs).
    """

    batches: Iterable[Sequence[Tensor]]
    ordered: Iterable[Sequence[Tensor]]
    teacher: CachedTeacher | None = None


@dataclass
class Task:
    """One task of the sequence and its schedule; lr, iterations and warm-up are per task (METHOD.md)."""

    name: str
    class_tokens: Tensor
    train: Iterable[Sequence[Tensor]]
    replay: ReplaySet | None = None
    lr: float = 1e-5
    iterations: int = 1000
    warmup: int = 100


TeacherEmbeddings = Callable[[ReplayBatch], tuple[Tensor, Tensor]]


def embed(encode: Callable[[Tensor], Tensor], inputs: Tensor, precision: Precision) -> Tensor:
    """Normalised embeddings: the forward pass under the precision's autocast, the output cast to fp32 and then
    normalised, so that logits, softmax and KL are computed in fp32 (METHOD.md, "Numeric precision")."""
    with precision.autocast():
        features = encode(inputs)
    return F.normalize(features.to(torch.promote_types(features.dtype, torch.float32)), dim=-1)  # fp64 stays


@torch.no_grad()
def teacher_forward(teacher: nn.Module, batch: ReplayBatch, precision: Precision = FP32) -> tuple[Tensor, Tensor]:
    """The teacher's normalised (image, text) embeddings of a replay batch, computed now."""
    return embed(teacher.encode_image, batch.images, precision), embed(teacher.encode_text, batch.tokens, precision)


class CachedTeacher:
    """The teacher's embeddings of every replay pair, computed once per task and looked up by index.

    Exact because the teacher is frozen and replay images are not augmented: a pair always gives the same input.
    The forward passes run in the task's precision; the cache holds fp32, as a forward every step would give.
    Row i of `images` and `texts` is pair i's.
    """

    def __init__(self, images: Tensor, texts: Tensor) -> None:
        self.images, self.texts = images, texts

    @classmethod
    def compute(
        cls,
        teacher: nn.Module,
        ordered: Iterable[Sequence[Tensor]],
        device: torch.device | str,
        precision: Precision = FP32,
    ) -> CachedTeacher:
        """One pass of the teacher over every pair."""
        index, images, texts = [], [], []
        for raw in ordered:
            batch = ReplayBatch(*raw).to(device)
            image_emb, text_emb = teacher_forward(teacher, batch, precision)
            index.append(batch.index)
            images.append(image_emb)
            texts.append(text_emb)
        return cls(_table(torch.cat(index), torch.cat(images)), _table(torch.cat(index), torch.cat(texts)))

    def subset(self, indices: Tensor) -> CachedTeacher:
        """The cache of the pairs at `indices`, renumbered 0..len(indices)−1 in that order."""
        return CachedTeacher(self.images[indices], self.texts[indices])

    def __call__(self, batch: ReplayBatch) -> tuple[Tensor, Tensor]:
        return self.images[batch.index], self.texts[batch.index]


def _table(index: Tensor, rows: Tensor) -> Tensor:
    """Rows placed at their indices; the indices must be exactly 0..N−1 so that every lookup is defined."""
    if not torch.equal(index.sort().values, torch.arange(len(index), device=index.device)):
        raise ValueError("the replay set's ordered pass must yield each index 0..N-1 exactly once")
    table = torch.empty_like(rows)
    table[index] = rows
    return table


class TaskState:
    """What stays fixed during a task: θ_{t−1} (frozen teacher and weight anchor) and what is derived from it."""

    def __init__(
        self,
        task: Task,
        model: nn.Module,
        previous: nn.Module,
        teacher_mode: TeacherMode,
        device: torch.device | str,
        precision: Precision = FP32,
    ) -> None:
        self.task = task
        self.previous = previous
        self.teacher_mode = teacher_mode
        self.device = device
        self.precision = precision
        self.class_tokens = task.class_tokens.to(device)
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        previous_params = dict(previous.named_parameters())
        self.anchor = {n: previous_params[n] for n in self.params}

    @cached_property
    def teacher_replay(self) -> TeacherEmbeddings:
        """Built on first use, so methods without distillation never pay for the cache pass."""
        if self.teacher_mode == "per_step":
            return partial(teacher_forward, self.previous, precision=self.precision)
        if self.task.replay is None:
            raise ValueError(f"task {self.task.name!r} has no replay set")
        if self.task.replay.teacher is not None:
            return self.task.replay.teacher
        return CachedTeacher.compute(self.previous, self.task.replay.ordered, self.device, self.precision)

    @cached_property
    def teacher_class_embeddings(self) -> Tensor:
        """f_T of the task's class prompts under θ_{t−1}: fixed for the task, so computed once (LwF)."""
        with torch.no_grad():
            return embed(self.previous.encode_text, self.class_tokens, self.precision)


class StepContext:
    """The quantities the loss terms of one step share, e.g. L^S for both distillation and ITA.

    `grad_scale` is fp16's loss scale S when a gradient scaler is on (the backward passes then leave S × the
    gradient in `.grad`), else None.
    """

    def __init__(
        self,
        model: nn.Module,
        state: TaskState,
        images: Tensor,
        labels: Tensor,
        replay: ReplayBatch | None,
        grad_scale: Tensor | None = None,
    ) -> None:
        self.model = model
        self.state = state
        self.images = images
        self.labels = labels
        self._replay = replay
        self.grad_scale = grad_scale

    @property
    def params(self) -> dict[str, Tensor]:
        return self.state.params

    @property
    def anchor(self) -> dict[str, Tensor]:
        return self.state.anchor

    @property
    def replay(self) -> ReplayBatch:
        if self._replay is None:
            raise ValueError(f"this method needs a replay set, and task {self.state.task.name!r} has none")
        return self._replay

    @cached_property
    def scale(self) -> Tensor:
        """s = exp(logit_scale), frozen: the same for student and teacher."""
        return self.model.logit_scale.exp().detach()

    @cached_property
    def task_logits(self) -> Tensor:
        """s·f_I(x)·f_T(T_t)ᵀ under θ: the student's images × task classes."""
        image_emb = self._embed(self.model.encode_image, self.images)
        class_emb = self._embed(self.model.encode_text, self.state.class_tokens)
        return losses.clip_logits(image_emb, class_emb, self.scale)

    @cached_property
    def teacher_task_logits(self) -> Tensor:
        """The same images × classes under θ_{t−1}, without gradient (LwF)."""
        with torch.no_grad():
            image_emb = self._embed(self.state.previous.encode_image, self.images)
        return losses.clip_logits(image_emb, self.state.teacher_class_embeddings, self.scale)

    @cached_property
    def replay_logits(self) -> Tensor:
        """L^S = s·f_I^θ(x_s)·f_T^θ(p_s)ᵀ, B×B over the global batch (embeddings gathered from every process)."""
        image_emb = distributed.gather(self._embed(self.model.encode_image, self.replay.images))
        text_emb = distributed.gather(self._embed(self.model.encode_text, self.replay.tokens))
        return losses.clip_logits(image_emb, text_emb, self.scale)

    @cached_property
    def teacher_replay_logits(self) -> Tensor:
        """L^T, the same with the teacher (cached or computed now, as the task's teacher mode says)."""
        image_emb, text_emb = self.state.teacher_replay(self.replay)
        return losses.clip_logits(distributed.gather(image_emb), distributed.gather(text_emb), self.scale)

    @cached_property
    def replay_targets(self) -> Tensor:
        """ITA's Y from prompt identity over the global batch: identical token rows are the same prompt."""
        return losses.ita_targets(distributed.gather(self.replay.tokens))

    def _embed(self, encode: Callable[[Tensor], Tensor], inputs: Tensor) -> Tensor:
        return embed(encode, inputs, self.state.precision)
