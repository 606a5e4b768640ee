"""What a run leaves in its output folder: metrics.json, a Markdown table, a heat-map of A, and the loss curves.

Accuracies are percentages. Every file is rewritten after each task, so a long run shows its results as it goes;
the four metrics appear once the matrix is complete.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np

from services.trainer import metrics
from services.trainer.synthetic import atomic_write

METRICS = "metrics.json"
TABLE = "results.md"
HEATMAP = "accuracy_matrix.png"
CURVES = "losses.png"
NOT_TERMS = {"task_name", "task_index", "step", "lr", "loss"}


def summary(names: Sequence[str], rows: Sequence[Sequence[float]]) -> dict[str, Any]:
    """The matrix so far (row i: after task i) and, once it is square, Transfer, Avg, Last and Forget."""
    complete = len(rows) == len(names)
    figures = metrics.summary(rows) if complete else {}
    return {
        "tasks": list(names),
        "accuracy": [list(row) for row in rows],
        "unit": "zero-shot top-1 accuracy, percent; accuracy[i][j] = on task j after training task i",
        "complete": complete,
        **{key: None if math.isnan(value) else value for key, value in figures.items()},
    }


def write_reports(out: Path, names: Sequence[str], rows: Sequence[Sequence[float]], log: Sequence[dict]) -> None:
    result = summary(names, rows)
    atomic_write(out / METRICS, json.dumps(result, indent=2).encode())
    atomic_write(out / TABLE, markdown_table(result).encode())
    heatmap(out / HEATMAP, names, rows)
    loss_curves(out / CURVES, log)


def markdown_table(result: dict[str, Any]) -> str:
    names = result["tasks"]
    lines = ["| after \\ on | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for name, row in zip(names, result["accuracy"], strict=False):
        lines.append(f"| {name} | " + " | ".join(f"{value:.1f}" for value in row) + " |")
    if result["complete"]:
        keys = ("Transfer", "Avg", "Last", "Forget")
        lines += ["", "| " + " | ".join(keys) + " |", "|---" * len(keys) + "|"]
        lines.append("| " + " | ".join("n/a" if result[k] is None else f"{result[k]:.1f}" for k in keys) + " |")
    return "\n".join(lines) + "\n"


def heatmap(path: Path, names: Sequence[str], rows: Sequence[Sequence[float]]) -> None:
    matrix = np.full((len(names), len(names)), np.nan)
    matrix[: len(rows)] = rows
    size = 1.5 + 0.6 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=100)
    for (i, j), value in np.ndenumerate(matrix):
        if not np.isnan(value):
            ax.text(
                j, i, f"{value:.1f}", ha="center", va="center", fontsize=8, color="white" if value < 60 else "black"
            )
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("evaluated on")
    ax.set_ylabel("after training")
    fig.colorbar(image, ax=ax, label="top-1 accuracy (%)")
    _save(fig, path)


def loss_curves(path: Path, log: Sequence[dict]) -> None:
    """One panel per loss term (and the total) over the run's steps, task boundaries dashed."""
    terms = [key for key in dict.fromkeys(k for entry in log for k in entry) if key not in NOT_TERMS] + ["loss"]
    fig, axes = plt.subplots(len(terms), 1, figsize=(8, 2 + 1.6 * len(terms)), sharex=True, squeeze=False)
    boundaries = [i for i in range(1, len(log)) if log[i]["task_index"] != log[i - 1]["task_index"]]
    for ax, term in zip(axes[:, 0], terms, strict=True):
        steps = [i for i, entry in enumerate(log) if term in entry]
        ax.plot(steps, [log[i][term] for i in steps], linewidth=0.8)
        for boundary in boundaries:
            ax.axvline(boundary, color="grey", linestyle="--", linewidth=0.6)
        ax.set_ylabel(term)
    axes[-1, 0].set_xlabel("training step (all tasks)")
    _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
