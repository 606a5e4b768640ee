"""The loss terms of METHOD.md ("Losses, each step") and of the baselines, as pure functions on tensors.

Notation: f_I, f_T are L2-normalised image and text embeddings, s = exp(logit_scale), θ the student's trainable
parameters by name and θ_{t−1} (the anchor) the same tensors at the start of the task.

Everything here is computed in fp32, whatever `training.precision` is: the embeddings arrive in fp32
(`context.embed`), and parameters and gradients are fp32 (METHOD.md, "Numeric precision").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

NO_GRAD_IMPORTANCE = 1e-6


def clip_logits(image_emb: Tensor, text_emb: Tensor, scale: Tensor | float) -> Tensor:
    """s·f_I·f_Tᵀ: rows are images, columns are texts."""
    return scale * image_emb @ text_emb.T


def task_loss(logits: Tensor, labels: Tensor, label_smoothing: float = 0.2) -> Tensor:
    """Task loss: "CE(s·f_I(x)·f_T(T_t)ᵀ, y) with label smoothing 0.2", T_t the prompts of the task's classes."""
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def kd(student: Tensor, teacher: Tensor, tau: float = 2.0) -> Tensor:
    """ "KD(a, b) = τ² · CE(a/τ, softmax(b/τ)) averaged over rows"; the teacher side carries no gradient.

    fp32 logits: KD is a small difference of the two distributions, which bf16's 8 bits would round away.
    """
    return tau**2 * F.cross_entropy(student / tau, F.softmax(teacher.detach() / tau, dim=1))


def contrastive_distillation(student: Tensor, teacher: Tensor, tau: float = 2.0) -> Tensor:
    """Contrastive distillation: "KD(L^S, L^T) + KD(L^Sᵀ, L^Tᵀ)", image→text and text→image rows."""
    return kd(student, teacher, tau) + kd(student.T, teacher.T, tau)


def prompt_ids(prompts: Tensor | Sequence[str]) -> Tensor:
    """One integer per pair such that equal prompts get equal ids.

    Accepts ids (1-D), token rows (2-D: equal rows are the same prompt as far as the model can tell) or strings.
    """
    if isinstance(prompts, Tensor):
        return prompts if prompts.dim() == 1 else torch.unique(prompts, dim=0, return_inverse=True)[1]
    ids = {p: i for i, p in enumerate(dict.fromkeys(prompts))}
    return torch.tensor([ids[p] for p in prompts])


def ita_targets(prompts: Tensor | Sequence[str]) -> Tensor:
    """ITA targets "Y_ij = [p_i = p_j] / Σ_k [p_i = p_k]": pairs with the same prompt are all positives.

    Y is symmetric (p_i = p_j implies equal counts), so it serves both directions.
    """
    ids = prompt_ids(prompts)
    same = (ids[:, None] == ids[None, :]).float()
    return same / same.sum(dim=1, keepdim=True)


def ita_loss(logits: Tensor, targets: Tensor, label_smoothing: float = 0.2) -> Tensor:
    """Image-text alignment: "CE(L^S, Y) + CE(L^Sᵀ, Y) with label smoothing 0.2".

    Smoothing of soft targets follows PyTorch's `cross_entropy(input, Y, label_smoothing=ε)`, as the authors' code
    calls it: each row's target becomes (1−ε)·Y_i + ε/B over the B texts (or images) of the batch.
    """
    return F.cross_entropy(logits, targets, label_smoothing=label_smoothing) + F.cross_entropy(
        logits.T, targets.T, label_smoothing=label_smoothing
    )


def normalise_importance(squares: Mapping[str, Tensor | None], params: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Each tensor of squared gradients divided by its own mean; 1e-6 where a tensor got no (or only zero) gradient.

    Per-tensor normalisation makes the importance scale-free, so one weight fits every layer and every task.
    An all-zero gradient is treated like a missing one instead of dividing by zero.
    """
    return {name: _per_tensor(squares.get(name), p) for name, p in params.items()}


def _per_tensor(square: Tensor | None, param: Tensor) -> Tensor:
    if square is None:
        return torch.full_like(param, NO_GRAD_IMPORTANCE, requires_grad=False)
    mean = square.detach().mean()  # no host sync: an all-zero tensor is handled by `where`, not by an `if`
    scale = torch.where(mean > 0, mean.reciprocal(), 0.0)
    floor = torch.where(mean > 0, 0.0, NO_GRAD_IMPORTANCE)
    return (square.detach() * scale).add_(floor)  # square / mean, or 1e-6 everywhere: no full-size `where`


def awc_fisher(params: Mapping[str, Tensor], grad_scale: Tensor | None = None) -> dict[str, Tensor]:
    """AWC's "F = (∇_θ (distill + ITA))², each parameter tensor divided by its own mean" from the `.grad` fields.

    Call it right after the backward pass of distill + ITA, before the task loss adds to the gradients. `.grad`
    is fp32 (master weights) under every precision, so the squares are fp32: bf16's 8 bits of mantissa would
    make the importances coarse, fp16's range would flush squares below 6e-8 to zero. Under fp16, `.grad` holds
    grad_scale × the gradient; it is unscaled here, before squaring.
    """
    squares = {n: None if p.grad is None else unscaled(p.grad.detach(), grad_scale).square() for n, p in params.items()}
    return normalise_importance(squares, params)


def unscaled(grad: Tensor, grad_scale: Tensor | None) -> Tensor:
    """The true gradient from one that fp16's loss scaling multiplied by grad_scale (None: not scaled)."""
    return grad if grad_scale is None else grad / grad_scale


def consolidation_loss(
    params: Mapping[str, Tensor], anchor: Mapping[str, Tensor], importance: Mapping[str, Tensor] | None = None
) -> Tensor:
    """AWC and EWC: "loss_AWC = Σ F ⊙ (θ − θ_{t−1})², F detached".

    Without an importance F it is the plain L2 to the anchor, Σ (θ − θ_{t−1})².
    """
    weights = dict.fromkeys(params) if importance is None else importance
    return torch.stack([_WeightedSquare.apply(p, anchor[n], weights[n]) for n, p in params.items()]).sum()


class _WeightedSquare(torch.autograd.Function):
    """Σ F⊙(θ − θ_{t−1})² for one tensor; the forward keeps F⊙(θ − θ_{t−1}), so the gradient is one product.

    AWC runs over every parameter every step; autograd's chain of elementwise steps (difference, square, product,
    and their backward) reads and writes the parameter-sized tensors about twice as often as this does.
    """

    @staticmethod
    def forward(ctx: Any, param: Tensor, anchor: Tensor, weight: Tensor | None) -> Tensor:
        diff = param.detach() - anchor.detach()
        weighted = diff if weight is None else weight.detach() * diff
        ctx.save_for_backward(weighted)
        return torch.dot(weighted.reshape(-1), diff.reshape(-1))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (weighted,) = ctx.saved_tensors
        return weighted * (2 * grad), None, None


def lwf_loss(student_logits: Tensor, teacher_logits: Tensor, tau: float = 2.0) -> Tensor:
    """LwF: KD(student, teacher) on the current task's images against the task's class text embeddings.

    Both logit matrices are images × task classes; the teacher's comes from θ_{t−1} with its own text embeddings.
    """
    return kd(student_logits, teacher_logits, tau)
