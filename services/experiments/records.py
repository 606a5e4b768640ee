"""What a page holds: every finished run's metrics (`runs.json` beside the page), checked against the settings of
the sweep that adds to it, so that runs made with other settings never share a page."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gift_common.errors import UserError
from gift_common.files import atomic_write
from services.experiments.sweep import Cell
from services.trainer.config import parse_config
from services.trainer.runner import CONFIG, changed_settings, outcome_settings

RECORD = "runs.json"


def finished(out: Path, cell: Cell, expected: dict[str, Any]) -> dict[str, Any] | None:
    """The metrics of the cell's run in `out`, if it ran to the end; a finished run with other settings than
    `expected` (the cell's `cell_config`) is refused rather than put on a page it does not belong to."""
    folder = out / "runs" / cell.name
    path = folder / "metrics.json"
    result = json.loads(path.read_text()) if path.is_file() else {}
    if not result.get("complete", False):
        return None
    try:
        saved = outcome_settings(parse_config(json.loads((folder / CONFIG).read_text()), base=folder))
    except (OSError, ValueError, UserError) as error:  # no config, not JSON, or not a run config
        raise ValueError(f"{folder} holds finished metrics without a readable {CONFIG} ({error}), so its settings "
                         "cannot be checked: give this sweep its own --out") from None  # fmt: skip
    if changed := changed_settings(saved, parse_config(expected, base=folder)):
        raise ValueError(f"{folder} holds a finished run with other settings ({', '.join(changed)}) than this "
                         "sweep's: give this sweep its own --out")  # fmt: skip
    return result


@dataclass
class PageRecord:
    """Every finished run of a page (`runs.json` beside it). Runs belong on one page only under the same split,
    schedule and weights per method, so a sweep with other settings is refused rather than mixed in."""

    split: str
    schedule: str
    weights: dict[str, dict[str, float]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # cell name -> {"cell": ..., "metrics": ...}

    @classmethod
    def open(cls, folder: Path, split: str, schedule: str, weights: dict[str, dict[str, float]]) -> PageRecord:
        """The record in `folder` (a new one if none), checked against the settings about to be run."""
        path = folder / RECORD
        if not path.is_file() and (folder / "results.md").is_file():
            raise ValueError(f"{folder} holds a page without its runs ({RECORD}); it would be overwritten: give this "
                             "sweep its own --page")  # fmt: skip
        record = cls(**json.loads(path.read_text())) if path.is_file() else cls(split, schedule)
        if (record.split, record.schedule) != (split, schedule):
            raise ValueError(f"{path} holds runs on {record.split} with '{record.schedule}', not on {split} with "
                             f"'{schedule}': give this sweep its own --page")  # fmt: skip
        for method, own in weights.items():
            if method in record.weights and record.weights[method] != own:
                raise ValueError(f"{path} holds {method} runs with settings {record.weights[method] or 'as defined'}"
                                 f", not {own or 'as defined'}: give this sweep its own --page")  # fmt: skip
        return record

    def __contains__(self, cell: Cell) -> bool:
        return cell.name in self.runs

    def add(self, cell: Cell, metrics: dict[str, Any], weights: dict[str, float]) -> None:
        self.runs[cell.name] = {"cell": asdict(cell), "metrics": metrics}
        self.weights[cell.method] = weights

    def cells(self) -> list[tuple[Cell, dict[str, Any]]]:
        return [(Cell(**run["cell"]), run["metrics"]) for _, run in sorted(self.runs.items())]

    def save(self, folder: Path) -> None:
        atomic_write(folder / RECORD, json.dumps(asdict(self), indent=1).encode())
