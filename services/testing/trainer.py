"""What the trainer's tests and benchmarks share: a tiny architecture file, a task from memory, one configuration's
step time and peak memory (``bench/trainer_step.py`` and the GPU check measure with ``measure_steps``)."""

from __future__ import annotations

import resource
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import open_clip
import torch

from services.trainer.context import ReplaySet, Task
from services.trainer.engine import Engine
from services.trainer.methods import build_terms
from services.trainer.models import TINY_TEST_ARCHITECTURE, create_model, create_tokenizer
from services.trainer.presets import PRESETS

# A task's classes and a replay set's prompts (some repeated, as a synthetic set's are) for the engine's tests.
CLASSES = ["cat", "dog", "bird"]
REPLAY_PROMPTS = ["a car.", "a tree.", "a car.", "a cup.", "a tree.", "a boat.", "a car.", "a lamp."]


def write_tiny_arch(directory: Path) -> Path:
    """The tiny CLIP (ViT 32 px, 2 layers each side) as an open_clip JSON file in ``directory``: fast enough for CPU
    tests, and a file that a config can name by a path relative to itself."""
    return Path(shutil.copyfile(TINY_TEST_ARCHITECTURE, directory / TINY_TEST_ARCHITECTURE.name))


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


def run_until_killed(config: Any, steps: int) -> None:
    """Run ``config`` afresh and stop it as a kill would, right after the checkpoint that follows its ``steps``-th
    step (the checkpoint a resumed run starts from)."""
    from services.trainer.runner import Runner, run  # torch and the whole trainer: only when a test asks

    checkpoint = Runner._checkpoint

    def stop_after(runner: Runner) -> None:
        checkpoint(runner)
        if len(runner.log) == steps:
            raise KeyboardInterrupt

    Runner._checkpoint = stop_after  # type: ignore[method-assign]
    try:
        run(config, resume=False, device=torch.device("cpu"))
    except KeyboardInterrupt:
        return
    finally:
        Runner._checkpoint = checkpoint  # type: ignore[method-assign]
    raise AssertionError(f"the run ended before its step {steps}")
