"""MTIL metrics on a hand-made matrix, and zero-shot accuracy against a by-hand classifier."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from services.testing.trainer import write_tiny_arch
from services.trainer import metrics
from services.trainer.evaluation import zero_shot_accuracy, zero_shot_classifier
from services.trainer.models import create_model, create_tokenizer

# A[i][j]: after task i, accuracy on task j
A = [
    [80.0, 50.0, 40.0],
    [70.0, 90.0, 45.0],
    [60.0, 85.0, 95.0],
]


def test_mtil_metrics_by_hand() -> None:
    assert metrics.transfer(A) == pytest.approx((50 + (40 + 45) / 2) / 2)  # upper triangle, column by column
    assert metrics.transfer_per_task(A) == pytest.approx([50, (40 + 45) / 2])
    assert metrics.average(A) == pytest.approx(615 / 9)
    assert metrics.last(A) == pytest.approx((60 + 85 + 95) / 3)
    assert metrics.forget(A) == pytest.approx(((60 - 80) + (85 - 90)) / 2)  # last task left out
    assert metrics.summary(A) == {
        "Transfer": metrics.transfer(A),
        "Avg": metrics.average(A),
        "Last": metrics.last(A),
        "Forget": metrics.forget(A),
    }


def test_matrix_must_be_square_and_one_task_has_no_transfer_or_forget() -> None:
    with pytest.raises(ValueError, match="n×n"):
        metrics.average([[1.0, 2.0]])
    single = metrics.summary([[70.0]])
    assert single["Avg"] == single["Last"] == 70.0
    assert math.isnan(single["Transfer"]) and math.isnan(single["Forget"])


def test_zero_shot_accuracy_matches_a_classifier_written_by_hand(tmp_path: Path) -> None:
    arch = write_tiny_arch(tmp_path)
    torch.manual_seed(0)
    model, tokenizer = create_model(arch), create_tokenizer(arch)
    classes, templates = ["cat", "dog", "bird"], ["a photo of a {}.", "a drawing of a {}."]

    classifier = zero_shot_classifier(model, tokenizer, classes, templates)
    with torch.no_grad():
        by_hand = torch.stack(
            [
                F.normalize(
                    model.encode_text(tokenizer([t.format(c) for t in templates]), normalize=True).mean(0), dim=0
                )
                for c in classes
            ],
            dim=1,
        )
    assert torch.allclose(classifier, by_hand, atol=1e-6)

    images = torch.randn(10, 3, 32, 32)
    with torch.no_grad():
        predicted = (model.encode_image(images, normalize=True) @ by_hand).argmax(1)
    labels = torch.tensor([int(p) if i < 7 else (int(p) + 1) % 3 for i, p in enumerate(predicted)])  # 7 of 10 right
    batches = [(images[:4], labels[:4]), (images[4:], labels[4:])]
    model.train()
    assert zero_shot_accuracy(model, tokenizer, batches, classes, templates) == pytest.approx(0.7)
    assert model.training
