"""Each loss of METHOD.md against a small case computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from services.trainer import losses


def log_softmax_row(row: list[float]) -> list[float]:
    log_z = math.log(sum(math.exp(v) for v in row))
    return [v - log_z for v in row]


def cross_entropy_rows(logits: list[list[float]], targets: list[list[float]]) -> float:
    """Mean over rows of −Σ_j t_j log softmax(z)_j, written out."""
    rows = [
        -sum(t * ls for t, ls in zip(tr, log_softmax_row(zr), strict=True))
        for zr, tr in zip(logits, targets, strict=True)
    ]
    return sum(rows) / len(rows)


def transpose(matrix: list[list[float]]) -> list[list[float]]:
    return [list(column) for column in zip(*matrix, strict=True)]


def test_task_loss_smooths_one_hot_targets() -> None:
    logits, eps = [[2.0, 0.0, -1.0]], 0.2
    expected = cross_entropy_rows(logits, [[1 - eps + eps / 3, eps / 3, eps / 3]])
    assert losses.task_loss(torch.tensor(logits), torch.tensor([0]), eps).item() == pytest.approx(expected, rel=1e-6)


def test_kd_of_equal_logits_is_tau_squared_entropy() -> None:
    b, tau = [1.0, 3.0, -2.0], 2.0
    p = [math.exp(v) for v in log_softmax_row([v / tau for v in b])]
    entropy = -sum(pi * math.log(pi) for pi in p)
    logits = torch.tensor([b, b])
    assert losses.kd(logits, logits, tau).item() == pytest.approx(tau**2 * entropy, rel=1e-6)


def test_kd_gradient_vanishes_when_student_matches_teacher() -> None:
    teacher = torch.tensor([[0.5, -1.0, 2.0]])
    student = teacher.clone().requires_grad_(True)
    losses.kd(student, teacher, 2.0).backward()
    assert torch.allclose(student.grad, torch.zeros_like(teacher), atol=1e-7)


def test_contrastive_distillation_is_both_directions() -> None:
    student, teacher, tau = [[1.0, 0.0], [2.0, -1.0]], [[0.0, 1.0], [1.0, 1.0]], 2.0

    def kd_by_hand(a: list[list[float]], b: list[list[float]]) -> float:
        targets = [[math.exp(v) for v in log_softmax_row([x / tau for x in row])] for row in b]
        return tau**2 * cross_entropy_rows([[x / tau for x in row] for row in a], targets)

    expected = kd_by_hand(student, teacher) + kd_by_hand(transpose(student), transpose(teacher))
    got = losses.contrastive_distillation(torch.tensor(student), torch.tensor(teacher), tau)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_ita_targets_share_mass_among_repeated_prompts() -> None:
    expected = torch.tensor([[0.5, 0.0, 0.5], [0.0, 1.0, 0.0], [0.5, 0.0, 0.5]])
    tokens = torch.tensor([[1, 5, 2], [1, 7, 2], [1, 5, 2]])
    for prompts in (["a cat", "a dog", "a cat"], torch.tensor([4, 9, 4]), tokens):
        assert torch.equal(losses.ita_targets(prompts), expected)


def test_ita_loss_smooths_soft_targets_the_pytorch_way() -> None:
    logits, eps = [[2.0, 0.0, 1.0], [0.0, 3.0, -1.0], [1.0, 0.5, 0.0]], 0.2
    y = [[0.5, 0.0, 0.5], [0.0, 1.0, 0.0], [0.5, 0.0, 0.5]]
    smoothed = [[(1 - eps) * v + eps / 3 for v in row] for row in y]
    expected = cross_entropy_rows(logits, smoothed) + cross_entropy_rows(transpose(logits), smoothed)
    got = losses.ita_loss(torch.tensor(logits), losses.ita_targets(["a", "b", "a"]), eps)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_awc_fisher_is_normalised_per_tensor() -> None:
    used = torch.nn.Parameter(torch.zeros(3))
    used.grad = torch.tensor([1.0, 2.0, 3.0])  # squares 1, 4, 9; mean 14/3
    zero = torch.nn.Parameter(torch.zeros(2))
    zero.grad = torch.zeros(2)
    unused = torch.nn.Parameter(torch.zeros(2, 2))
    fisher = losses.awc_fisher({"used": used, "zero": zero, "unused": unused})
    assert torch.allclose(fisher["used"], torch.tensor([3 / 14, 12 / 14, 27 / 14]))
    assert torch.equal(fisher["zero"], torch.full((2,), 1e-6))
    assert torch.equal(fisher["unused"], torch.full((2, 2), 1e-6))
    assert not fisher["used"].requires_grad


def test_consolidation_is_weighted_l2_with_detached_importance() -> None:
    theta = {"w": torch.tensor([1.0, 2.0], requires_grad=True), "b": torch.tensor([3.0], requires_grad=True)}
    anchor = {"w": torch.tensor([0.0, 0.0]), "b": torch.tensor([1.0])}
    importance = {"w": torch.tensor([2.0, 3.0], requires_grad=True), "b": torch.tensor([0.5], requires_grad=True)}
    assert losses.consolidation_loss(theta, anchor).item() == pytest.approx(1 + 4 + 4)
    weighted = losses.consolidation_loss(theta, anchor, importance)
    assert weighted.item() == pytest.approx(2 * 1 + 3 * 4 + 0.5 * 4)
    weighted.backward()
    assert importance["w"].grad is None
    assert torch.equal(theta["w"].grad, torch.tensor([2 * 2 * 1.0, 2 * 3 * 2.0]))


def test_lwf_distils_the_teachers_class_logits() -> None:
    student, teacher = torch.tensor([[1.0, 2.0, 0.0]]), torch.tensor([[0.0, 2.0, 1.0]])
    assert losses.lwf_loss(student, teacher, 2.0).item() == pytest.approx(losses.kd(student, teacher, 2.0).item())
