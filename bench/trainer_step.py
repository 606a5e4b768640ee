"""Seconds per training iteration and peak memory of FT and GIFT (cached teacher), in fp32 and bf16.

`measure_steps` measures one method in one precision on one model and batch (also imported by the GPU check):
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
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import open_clip
import torch

from services.devices import describe
from services.trainer.context import ReplaySet, Task
from services.trainer.engine import Engine
from services.trainer.methods import PRESETS, build_terms
from services.trainer.models import TINY_TEST_ARCHITECTURE, create_model, create_tokenizer

METHODS = ("ft", "gift")
PRECISIONS = ("fp32", "bf16")


def make_task(
    tokenizer, image_size: int, batch: int, replay_batch: int, classes: int, replay_size: int, iterations: int
) -> Task:
    """Four task batches and `replay_size` replay pairs (half as many distinct prompts), random, from memory."""
    g = torch.Generator().manual_seed(0)
    shape = (3, image_size, image_size)
    train = [(torch.randn(batch, *shape, generator=g), torch.randint(0, classes, (batch,), generator=g))
             for _ in range(4)]  # fmt: skip
    prompts = [f"a photo of a concept number {i % max(1, replay_size // 2)}." for i in range(replay_size)]
    images, tokens, index = torch.randn(replay_size, *shape, generator=g), tokenizer(prompts), torch.arange(replay_size)
    order = torch.randperm(replay_size, generator=g).split(replay_batch)
    return Task(
        name="bench",
        class_tokens=tokenizer([f"a photo of a class number {c}." for c in range(classes)]),
        train=train,
        replay=ReplaySet(
            batches=[(images[i], tokens[i], index[i]) for i in order if len(i) == replay_batch],
            ordered=[(images[i], tokens[i], index[i]) for i in torch.arange(replay_size).split(replay_batch)],
        ),
        iterations=iterations,
        warmup=1,
    )


def measure_steps(
    architecture: str | Path = TINY_TEST_ARCHITECTURE,
    pretrained: str | Path | None = None,
    batch: int = 64,
    replay_batch: int = 64,
    method: str = "gift",
    precision: str = "fp32",
    device: str = "cpu",
    iterations: int = 5,
    warmup: int = 2,
    *,
    classes: int = 100,
    teacher: str = "cached",
    grad_checkpointing: bool = False,
) -> dict[str, Any]:
    """Seconds per iteration (median of `iterations` timed steps after `warmup` untimed ones) and peak memory.

    Peak memory is the GPU's peak allocation during the steps on CUDA, the process's peak resident size on a CPU
    (a high-water mark since the process started: measure one configuration per process for its own figure).
    A precision the device cannot do raises the trainer's UserError.
    """
    torch.manual_seed(0)
    model = create_model(architecture, pretrained, device=device)
    if grad_checkpointing:
        model.set_grad_checkpointing()
    tokenizer = create_tokenizer(architecture)
    image_size = open_clip.get_model_preprocess_cfg(model)["size"]
    image_size = image_size if isinstance(image_size, int) else image_size[0]
    task = make_task(tokenizer, image_size, batch, replay_batch, classes, 2 * replay_batch, warmup + iterations)
    engine = Engine(model, build_terms(PRESETS[method]), device=device, teacher_mode=teacher, precision=precision,
                    progress=False)  # fmt: skip
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    engine.begin_task(task)
    start = time.perf_counter()
    if any(term.phase == "replay" for term in engine.terms):
        engine.state.teacher_replay  # noqa: B018 (builds the cache now, not inside a timed step)
    cache_seconds = time.perf_counter() - start
    for _ in range(warmup):  # allocator, first-call overheads, autocast's weight casts
        engine.step()
    seconds = []
    for _ in range(iterations):
        start = time.perf_counter()
        engine.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)  # the optimiser's kernels too, not only the gradients the log waits for
        seconds.append(time.perf_counter() - start)
    return {
        "method": method,
        "precision": precision,
        "teacher": teacher,
        "s_per_it": statistics.median(seconds),
        "peak_memory_bytes": peak_memory(device),
        "teacher_cache_build_s": cache_seconds,
    }


def peak_memory(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is in bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


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
