"""The tiny world's evidence: every method, several seeds, two task orders, one results page.

    python -m services.experiments --out runs/experiments [--seeds 0 1 2] [--orders 1 2] [--split test]

Each run is a `gift train` process from the embedded default's config (the shipped config tinyworld) with the method,
seed, order and split set (runs of the config's own method keep its val-chosen weights); two run at a time, and
one generator stack serves the GIFT runs' synthetic sets. The page (`results.md`) gives mean and standard deviation
over seeds of Transfer, Avg, Last, Forget and what each method kept of pre-training, with a bar chart; settings are
chosen with `--split val`, and the page reported with `--split test`.

The page keeps every finished run's metrics beside it (`runs.json`, rewritten as each run ends), so it outlives the
run folders: a sweep into the same page, with the same settings, runs only what the page does not hold yet.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gift_common.files import atomic_write
from services.experiments.page import collect, results_page, schedule_line, settings_line
from services.experiments.records import PageRecord, finished
from services.experiments.sweep import (
    ALL_METHODS,
    METHODS,
    ORDERS,
    Cell,
    Overrides,
    cell_config,
    method_overrides,
    method_weights,
    sweep,
)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.experiments", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/experiments"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--orders", type=int, nargs="+", choices=sorted(ORDERS), default=sorted(ORDERS))
    parser.add_argument("--methods", nargs="+", choices=list(ALL_METHODS), default=list(METHODS))
    parser.add_argument("--split", choices=("val", "test"), default="test")
    parser.add_argument("--page", type=Path, help="where results.md and its charts go (default: OUT/SPLIT)")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--lr", type=float, help="every task's learning rate (default: the config's)")
    parser.add_argument("--iterations", type=int, help="every task's iterations (default: the config's)")
    parser.add_argument("--set", action="append", default=[], metavar="METHOD.SETTING=VALUE",
                        help="a method's setting, e.g. gift.awc=0.3 (repeatable; one --out per choice)")  # fmt: skip
    parser.add_argument("--page-only", action="store_true", help="write the page from the runs finished so far")
    args = parser.parse_args(argv)
    out = args.out.resolve() / args.split
    page_dir = (args.page or out).resolve()
    training = {key: getattr(args, key) for key in ("lr", "iterations") if getattr(args, key) is not None}
    try:
        overrides = Overrides(training, method_weights(args.methods, method_overrides(args.set)))
        weights = {method: overrides.methods.get(method, {}) for method in args.methods}
        record = PageRecord.open(page_dir, args.split, schedule_line(training), weights)
    except ValueError as error:
        parser.error(str(error))
    # method by method, in the order given: a sweep cut short leaves whole columns on the page
    cells = [Cell(o, s, m) for m in args.methods for o in args.orders for s in args.seeds]

    def done(cell: Cell) -> dict[str, Any] | None:
        return finished(out, cell, cell_config(cell, out, args.split, None, overrides))

    def publish(*ended: Cell) -> None:
        """Take finished runs into the record, and write it and the page again."""
        for cell in ended:
            if (metrics := done(cell)) is not None:
                record.add(cell, metrics, weights[cell.method])
        record.save(page_dir)
        page = results_page(collect(record.cells()), args.split, page_dir, settings_line(record))
        atomic_write(page_dir / "results.md", page.encode())

    try:
        publish(*[cell for cell in cells if cell not in record and done(cell)])
    except ValueError as error:
        parser.error(str(error))
    todo = [cell for cell in cells if cell not in record]
    print(f"experiments: {len(cells) - len(todo)} of {len(cells)} runs on the page already; {len(todo)} to run",
          flush=True)  # fmt: skip
    if not args.page_only:
        sweep(todo, out, args.split, args.parallel, overrides, on_finish=publish)
    print((page_dir / "results.md").read_text(), flush=True)
