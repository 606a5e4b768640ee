"""Methods as sets of weighted loss terms (METHOD.md): GIFT, GIFT without each of its parts, and the baselines.

Each term joins one of two backward passes. "replay" terms (distillation, ITA) go first, so that their gradient is
in `.grad` when AWC reads it as its Fisher; "task" terms go second and add to it; one optimiser step follows. Without
AWC the two passes give the gradient of the sum (the graphs are disjoint), so every method runs through the same step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from services.trainer import distributed, losses
from services.trainer.context import StepContext
from services.trainer.presets import MethodSettings

Phase = Literal["replay", "task"]
PHASES: tuple[Phase, ...] = ("replay", "task")


@dataclass
class LossTerm(ABC):
    """One weighted term of a method's loss, logged under `name` (weighted, as it enters the gradient)."""

    weight: float
    name: ClassVar[str]
    phase: ClassVar[Phase] = "task"

    def __call__(self, ctx: StepContext) -> Tensor:
        return self.weight * self.value(ctx)

    @abstractmethod
    def value(self, ctx: StepContext) -> Tensor:
        """The unweighted term."""

    def end_task(self, contexts: Iterator[StepContext]) -> None:  # noqa: B027 (optional hook)
        """Called once a task is learnt, with contexts over fresh task batches; most terms keep nothing."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 (optional hook)
        """Restores what `state_dict` returned; stateless terms have nothing to restore."""


@dataclass
class TaskLoss(LossTerm):
    label_smoothing: float = 0.2
    name: ClassVar[str] = "task"

    def value(self, ctx: StepContext) -> Tensor:
        return losses.task_loss(ctx.task_logits, ctx.labels, self.label_smoothing)


@dataclass
class Distillation(LossTerm):
    """Contrastive distillation of θ_{t−1}'s replay logits; the replay pairs may be synthetic or real."""

    tau: float = 2.0
    name: ClassVar[str] = "distill"
    phase: ClassVar[Phase] = "replay"

    def value(self, ctx: StepContext) -> Tensor:
        return losses.contrastive_distillation(ctx.replay_logits, ctx.teacher_replay_logits, self.tau)


@dataclass
class ITA(LossTerm):
    label_smoothing: float = 0.2
    name: ClassVar[str] = "ita"
    phase: ClassVar[Phase] = "replay"

    def value(self, ctx: StepContext) -> Tensor:
        return losses.ita_loss(ctx.replay_logits, ctx.replay_targets, self.label_smoothing)


@dataclass
class AWC(LossTerm):
    """Adaptive weight consolidation: Fisher from this step's replay gradient, already in `.grad`."""

    name: ClassVar[str] = "awc"

    def value(self, ctx: StepContext) -> Tensor:
        return losses.consolidation_loss(ctx.params, ctx.anchor, losses.awc_fisher(ctx.params, ctx.grad_scale))


@dataclass
class L2(LossTerm):
    name: ClassVar[str] = "l2"

    def value(self, ctx: StepContext) -> Tensor:
        return losses.consolidation_loss(ctx.params, ctx.anchor)


@dataclass
class EWC(LossTerm):
    """EWC with a Fisher estimated from the task's data once the task is learnt, anchored at θ_{t−1}.

    The Fisher is the squared gradient of the task's log-likelihood (CE without smoothing) summed over `batches`
    batches, normalised per tensor as AWC's is (so weights are comparable), and added over tasks (online EWC).
    Before the first task ends there is no Fisher and the term is zero. Under fp16 the log-likelihood is scaled
    as the training loss is, and a batch whose scaled gradient overflowed is left out.
    """

    batches: int = 10
    fisher: dict[str, Tensor] | None = field(default=None, repr=False)
    name: ClassVar[str] = "ewc"

    def __post_init__(self) -> None:
        if self.batches < 1:
            raise ValueError("EWC needs at least one batch to estimate its Fisher")

    def value(self, ctx: StepContext) -> Tensor:
        if self.fisher is None:
            return ctx.scale.new_zeros(())
        return losses.consolidation_loss(ctx.params, ctx.anchor, self.fisher)

    def end_task(self, contexts: Iterator[StepContext]) -> None:
        squares: dict[str, Tensor] = {}
        for ctx in islice(contexts, self.batches):
            params = ctx.params
            log_likelihood = losses.task_loss(ctx.task_logits, ctx.labels, label_smoothing=0.0)
            scaled = log_likelihood if ctx.grad_scale is None else log_likelihood * ctx.grad_scale
            grads = torch.autograd.grad(scaled, list(params.values()), allow_unused=True)
            if ctx.grad_scale is not None and not all_finite(grads):
                continue
            for name, grad in zip(params, grads, strict=True):
                if grad is not None:
                    squares[name] = squares.get(name, 0) + losses.unscaled(grad.detach(), ctx.grad_scale) ** 2
        distributed.average_(squares.values())  # under DDP every process must keep the same Fisher
        fisher = losses.normalise_importance(squares, params)
        self.fisher = fisher if self.fisher is None else {n: self.fisher[n] + f for n, f in fisher.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"fisher": self.fisher}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fisher = state["fisher"]


def all_finite(grads: tuple[Tensor | None, ...]) -> bool:
    return bool(torch.stack([g.isfinite().all() for g in grads if g is not None]).all())


@dataclass
class LwF(LossTerm):
    """Learning without forgetting: distil θ_{t−1}'s logits on the current task's images."""

    tau: float = 2.0
    name: ClassVar[str] = "lwf"

    def value(self, ctx: StepContext) -> Tensor:
        return losses.lwf_loss(ctx.task_logits, ctx.teacher_task_logits, self.tau)


def build_terms(settings: MethodSettings) -> list[LossTerm]:
    """The method's terms: the task loss always, every other term whose weight is not zero."""
    s = settings
    candidates: list[LossTerm] = [
        TaskLoss(1.0, s.label_smoothing),
        Distillation(s.distill, s.tau),
        ITA(s.ita, s.label_smoothing),
        AWC(s.awc),
        L2(s.l2),
        EWC(s.ewc, s.ewc_batches),
        LwF(s.lwf, s.tau),
    ]
    return [term for term in candidates if term.weight != 0]
