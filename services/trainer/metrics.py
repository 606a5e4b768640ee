"""The MTIL metrics (METHOD.md, "Evaluation") from the accuracy matrix A[i][j]: after task i, accuracy on task j.

A is n×n, rows in training order, columns in the same task order. Indices below are 0-based.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Matrix = Sequence[Sequence[float]] | np.ndarray


def _square(accuracies: Matrix) -> np.ndarray:
    a = np.asarray(accuracies, dtype=float)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"the accuracy matrix must be n×n (after task i, on task j); got shape {a.shape}")
    return a


def transfer_per_task(accuracies: Matrix) -> list[float]:
    """mean_{i<j} A[i][j] for each task j after the first: what the models trained before task j keep of it."""
    a = _square(accuracies)
    return [float(a[:j, j].mean()) for j in range(1, len(a))]


def transfer(accuracies: Matrix) -> float:
    """Transfer = mean over j ≥ 2 of mean_{i<j} A[i][j]: the upper triangle, what is kept for tasks not yet learnt.

    NaN (undefined) for a single task.
    """
    per_task = transfer_per_task(accuracies)
    return float(np.mean(per_task)) if per_task else math.nan


def average(accuracies: Matrix) -> float:
    """Avg = mean of all A[i][j]."""
    return float(_square(accuracies).mean())


def last(accuracies: Matrix) -> float:
    """Last = mean of the last row: every task after the whole sequence."""
    return float(_square(accuracies)[-1].mean())


def forget(accuracies: Matrix) -> float:
    """Forget = mean over j of (A[last][j] − A[j][j]); negative when accuracy was lost.

    The last task is left out of the mean (its term is 0 by definition), as in the authors' MTIL script, which sums
    all n terms and divides by n − 1. NaN (undefined) for a single task.
    """
    a = _square(accuracies)
    return float(np.mean(a[-1, :-1] - np.diag(a)[:-1])) if len(a) > 1 else math.nan


def summary(accuracies: Matrix) -> dict[str, float]:
    """All four metrics by their table names."""
    return {
        "Transfer": transfer(accuracies),
        "Avg": average(accuracies),
        "Last": last(accuracies),
        "Forget": forget(accuracies),
    }
