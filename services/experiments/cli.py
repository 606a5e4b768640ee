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

from services.experiments.page import LABELS, TINY_WORLD_TITLE, schedule_line
from services.experiments.plan import Plan, run_plan
from services.experiments.sweep import (
    ALL_METHODS,
    METHODS,
    ORDERS,
    Cell,
    Overrides,
    cell_config,
    method_overrides,
    method_weights,
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
        plan = Plan(
            title=TINY_WORLD_TITLE,
            # method by method, in the order given: a sweep cut short leaves whole columns on the page
            cells=[Cell(o, s, m) for m in args.methods for o in args.orders for s in args.seeds],
            config_of=lambda cell, api_url: cell_config(cell, out, args.split, api_url, overrides),
            orders=ORDERS,
            labels=LABELS,
            split=args.split,
            schedule=schedule_line(training),
            weights={method: overrides.methods.get(method, {}) for method in args.methods},
        )
        print(run_plan(plan, out, page_dir, args.parallel, args.page_only), flush=True)
    except ValueError as error:
        parser.error(str(error))
