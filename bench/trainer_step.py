"""Seconds per training iteration of FT, GIFT with a teacher forward every step, and GIFT with the cached teacher.

Same tiny open_clip model, same batches (B task images over C classes, B synthetic pairs), one engine, measured side
by side: rounds of a few steps of each method in turn; the figures are medians over rounds (of times, and of the
ratios within a round), so that a slower moment of a shared machine does not decide them.
Data comes from memory, so the figures are the step's compute (each step ends with one device sync, for its log).
The teacher cache is built once per task; its time is reported apart (over a task's 1,000 iterations it is
negligible). The default of 100 classes is about the mean class count of the MTIL tasks (109).

Target: gift_cached_over_ft <= 2.0. The last line printed is one JSON object.
Run: .venv/bin/python bench/trainer_step.py [--batch-size 64 --rounds 10 --threads 1 --device cuda]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time

import torch
from torch import nn

from services.trainer.context import ReplaySet, Task
from services.trainer.engine import Engine
from services.trainer.methods import PRESETS, build_terms
from services.trainer.models import TINY_TEST_ARCHITECTURE, create_model, create_tokenizer

RUNS = {"ft": ("ft", "cached"), "gift_per_step": ("gift", "per_step"), "gift_cached": ("gift", "cached")}


def make_task(tokenizer, batch_size: int, classes: int, replay_size: int, iterations: int) -> Task:
    g = torch.Generator().manual_seed(0)
    train = [(torch.randn(batch_size, 3, 32, 32, generator=g), torch.randint(0, classes, (batch_size,), generator=g))
             for _ in range(4)]  # fmt: skip
    prompts = [f"a photo of a concept number {i % (replay_size // 2)}." for i in range(replay_size)]
    images, tokens, index = (
        torch.randn(replay_size, 3, 32, 32, generator=g),
        tokenizer(prompts),
        torch.arange(replay_size),
    )
    order = torch.randperm(replay_size, generator=g).split(batch_size)
    return Task(
        name="bench",
        class_tokens=tokenizer([f"a photo of a class number {c}." for c in range(classes)]),
        train=train,
        replay=ReplaySet(
            batches=[(images[i], tokens[i], index[i]) for i in order if len(i) == batch_size],
            ordered=[(images[i], tokens[i], index[i]) for i in torch.arange(replay_size).split(batch_size)],
        ),
        iterations=iterations,
        warmup=1,
    )


def started(model: nn.Module, preset: str, teacher: str, task: Task, device: str) -> tuple[Engine, float]:
    """An engine inside the task, with the teacher cache (if any) built; returns it and the cache's build time."""
    engine = Engine(
        copy.deepcopy(model), build_terms(PRESETS[preset]), device=device, teacher_mode=teacher, progress=False
    )
    engine.begin_task(task)
    start = time.perf_counter()
    if preset != "ft":
        engine.state.teacher_replay  # noqa: B018 (builds the cache now, not inside a timed step)
    return engine, time.perf_counter() - start


def timed_round(engines: dict[str, Engine], steps: int) -> dict[str, float]:
    """Seconds per iteration of each engine over `steps` steps, run one after the other."""
    seconds = {}
    for name, engine in engines.items():
        start = time.perf_counter()
        for _ in range(steps):
            engine.step()
        seconds[name] = (time.perf_counter() - start) / steps
    return seconds


def ratio(rounds: list[dict[str, float]], name: str, reference: str) -> float:
    """The median over rounds of the per-round ratio: a burst of load from elsewhere hits one round, not the figure."""
    return statistics.median(r[name] / r[reference] for r in rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--classes", type=int, default=100, help="classes of the task (text encoder rows per step)")
    parser.add_argument("--replay-size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps-per-round", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, tokenizer = create_model(TINY_TEST_ARCHITECTURE), create_tokenizer(TINY_TEST_ARCHITECTURE)
    iterations = 2 + args.rounds * args.steps_per_round
    task = make_task(tokenizer, args.batch_size, args.classes, args.replay_size, iterations)
    engines, cache_seconds = {}, {}
    for name, (preset, teacher) in RUNS.items():
        engines[name], cache_seconds[name] = started(model, preset, teacher, task, args.device)
        for _ in range(2):  # warm-up: allocator, first-call overheads
            engines[name].step()
    rounds = [timed_round(engines, args.steps_per_round) for _ in range(args.rounds)]
    per_step = {name: statistics.median(r[name] for r in rounds) for name in RUNS}
    for name, value in per_step.items():
        print(f"{name:>14}: {value * 1000:8.1f} ms/iteration")
    print(f"teacher cache of {args.replay_size} pairs built in {cache_seconds['gift_cached']:.2f} s (once per task)")
    result = {
        "gift_cached_over_ft": ratio(rounds, "gift_cached", "ft"),
        "gift_per_step_over_ft": ratio(rounds, "gift_per_step", "ft"),
        "gift_cached_over_gift_per_step": ratio(rounds, "gift_cached", "gift_per_step"),
        **{f"{name}_s_per_it": value for name, value in per_step.items()},
        "teacher_cache_build_s": cache_seconds["gift_cached"],
        "batch_size": args.batch_size,
        "classes": args.classes,
        "threads": args.threads,
        "device": args.device,
        "machine": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else platform.machine(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
