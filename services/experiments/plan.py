"""One sweep from start to page, whatever it sweeps: the cells still missing from the page run, each finished run
goes onto the page (`runs.json` and `results.md`, rewritten as each run ends), so a sweep cut short or run again
does only what the page lacks. The tiny world's experiments (cli.py) and `gift sweep` (config_sweep.py) are two
plans for it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gift_common.files import atomic_write
from services.experiments.page import collect, results_page, settings_line
from services.experiments.records import PageRecord, finished
from services.experiments.sweep import Cell, ConfigOf, sweep
from services.stack import ONE_THREAD


@dataclass(frozen=True)
class Plan:
    """What a sweep runs and how its page reads."""

    title: str  # the page's heading
    cells: list[Cell]  # in the order they run: method by method, so a sweep cut short leaves whole columns
    config_of: ConfigOf  # a cell's run config, given a local generator's URL or None
    orders: Mapping[int, Sequence[str]]  # each order's tasks, as the page names them
    labels: Mapping[str, str]  # each method's column label
    split: str  # the split every run is evaluated on
    schedule: str  # what every run of the page shares, in one line: a page never mixes two
    weights: dict[str, dict[str, float]] = field(default_factory=dict)  # settings each method changes
    local_generator: bool = True  # start a generator stack for the runs, else the configs' own generator
    env: Mapping[str, str] = field(default_factory=lambda: dict(ONE_THREAD))  # the runs' environment


def run_plan(plan: Plan, out: Path, page_dir: Path, parallel: int = 2, page_only: bool = False) -> str:
    """Run what the page in `page_dir` lacks (runs in `out/runs`) and return the page; a ValueError names a page or
    a finished run made with other settings."""
    record = PageRecord.open(page_dir, plan.split, plan.schedule, plan.weights)

    def done(cell: Cell) -> dict[str, Any] | None:
        return finished(out, cell, plan.config_of(cell, None))

    def publish(*ended: Cell) -> None:
        """Take finished runs into the record, and write it and the page again."""
        for cell in ended:
            if (metrics := done(cell)) is not None:
                record.add(cell, metrics, plan.weights.get(cell.method, {}))
        record.save(page_dir)
        page = results_page(collect(record.cells()), plan.split, page_dir, settings_line(record), plan.title,
                            plan.orders, plan.labels)  # fmt: skip
        atomic_write(page_dir / "results.md", page.encode())

    publish(*[cell for cell in plan.cells if cell not in record and done(cell)])
    todo = [cell for cell in plan.cells if cell not in record]
    print(f"sweep: {len(plan.cells) - len(todo)} of {len(plan.cells)} runs on the page already; {len(todo)} to run",
          flush=True)  # fmt: skip
    if not page_only:
        sweep(todo, out, parallel, plan.config_of, publish, plan.local_generator, plan.env)
    return (page_dir / "results.md").read_text()
