"""Seconds per training iteration and peak memory of FT and GIFT (cached teacher), in fp32 and bf16.

`measure_steps` (services/testing/trainer.py, also the GPU check's) measures one method in one precision on one model
and batch:
task images over C classes and replay pairs come from memory, so the figures are the step's compute (each step ends
with one device sync, for its log); the figure is the median over the timed steps, so that a slower moment of a
shared machine does not decide it. The teacher cache is built once per task; its time is reported apart (over a
task's 1,000 iterations it is negligible). The default of 100 classes is about the mean class count of the MTIL
tasks (109). The script runs each configuration in a fresh process, so that each peak memory is its own.

Targets (issue 17, on a GPU at ViT-B/16, batch 64 + 64): gift_over_ft <= 2.0, bf16_speedup >= 1.8.
The last line printed is one JSON object.
Run: .venv/bin/python bench/trainer_step.py [--architecture ViT-B-16-quickgelu --batch 64 --device cuda]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch

from services.devices import describe
from services.testing.trainer import measure_steps
from services.trainer.models import TINY_TEST_ARCHITECTURE

METHODS = ("ft", "gift")
PRECISIONS = ("fp32", "bf16")


def in_fresh_process(threads: int, **kwargs: Any) -> dict[str, Any]:
    """`measure_steps` in a new process (its own peak memory, its own allocator state)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context, initializer=torch.set_num_threads, initargs=(threads,)) as pool:
        return pool.submit(measure_steps, **kwargs).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", default=str(TINY_TEST_ARCHITECTURE), help="open_clip name or JSON file")
    parser.add_argument("--pretrained", default=None, help="a weights file; default: random weights")
    parser.add_argument("--batch", type=int, default=64, help="task images per step")
    parser.add_argument("--replay-batch", type=int, default=64, help="replay pairs per step")
    parser.add_argument("--classes", type=int, default=100, help="classes of the task (text encoder rows per step)")
    parser.add_argument("--iterations", type=int, default=10, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    args = parser.parse_args()
    settings = {
        "architecture": args.architecture,
        "pretrained": args.pretrained,
        "batch": args.batch,
        "replay_batch": args.replay_batch,
        "device": args.device,
        "iterations": args.iterations,
        "warmup": args.warmup,
        "classes": args.classes,
    }
    runs = {}
    for precision in PRECISIONS:
        for method in METHODS:
            run = in_fresh_process(args.threads, method=method, precision=precision, **settings)
            runs[f"{method}_{precision}"] = run
            print(f"{method:>5} {precision}: {run['s_per_it']:9.3f} s/iteration, "
                  f"peak memory {run['peak_memory_bytes'] / 2**30:6.2f} GiB", flush=True)  # fmt: skip
    result = {
        **{f"gift_over_ft_{p}": runs[f"gift_{p}"]["s_per_it"] / runs[f"ft_{p}"]["s_per_it"] for p in PRECISIONS},
        **{f"bf16_speedup_{m}": runs[f"{m}_fp32"]["s_per_it"] / runs[f"{m}_bf16"]["s_per_it"] for m in METHODS},
        **{f"{name}_s_per_it": run["s_per_it"] for name, run in runs.items()},
        **{f"{name}_peak_memory_bytes": run["peak_memory_bytes"] for name, run in runs.items()},
        "teacher_cache_build_s": {p: runs[f"gift_{p}"]["teacher_cache_build_s"] for p in PRECISIONS},
        **settings,
        "weights": "random" if args.pretrained is None else args.pretrained,
        "threads": args.threads,
        "machine": describe(torch.device(args.device)),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
