"""Two CPU processes (gloo) train as one process does on the same global batch: the loss, the update, evaluation.

GIFT is the hard case: its B×B contrastive losses couple the samples of a batch, and AWC's Fisher is the squared
gradient of the replay pass, which must be the global batch's (after the all-reduce), not each process's own.
Both sides compute in float64: in float32 the different summation order leaves ~1e-7 noise in the gradients, which
Adam's first steps (update ≈ lr·sign(g)) magnify where g ≈ 0 and would hide a real mistake behind loose tolerances.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from services.stack import free_port
from services.testing.trainer import CLASSES, REPLAY_PROMPTS, write_tiny_arch
from services.trainer.context import ReplaySet, Task
from services.trainer.engine import Engine
from services.trainer.evaluation import zero_shot_accuracy
from services.trainer.methods import build_terms
from services.trainer.models import create_model, create_tokenizer
from services.trainer.presets import GIFT

WORLD = 2
BATCH = 8
STEPS = 3  # from the second step on, θ ≠ θ_{t−1} and AWC contributes


def global_data(tokenizer) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    return {
        "images": torch.randn(STEPS, BATCH, 3, 32, 32, generator=g),
        "labels": torch.randint(0, 3, (STEPS, BATCH), generator=g),
        "replay_images": torch.randn(STEPS, BATCH, 3, 32, 32, generator=g),
        "replay_index": torch.stack([torch.randperm(8, generator=g) for _ in range(STEPS)]),
        "tokens": tokenizer(REPLAY_PROMPTS),
        "test_images": torch.randn(10, 3, 32, 32, generator=g),
        "test_labels": torch.randint(0, 3, (10,), generator=g),
    }


def train_and_evaluate(arch: Path, rank: int, world: int) -> dict:
    """GIFT for STEPS steps on this process's slice of each global batch, then zero-shot accuracy on its shard."""
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    model, tokenizer = create_model(arch), create_tokenizer(arch)
    data = global_data(tokenizer)
    share = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    pool = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(5))  # the replay set's images
    replay = [(pool[data["replay_index"][k][share]], data["tokens"][data["replay_index"][k][share]],
               data["replay_index"][k][share]) for k in range(STEPS)]  # fmt: skip
    task = Task(
        name="toy",
        class_tokens=tokenizer([f"a photo of a {c}." for c in CLASSES]),
        train=[(data["images"][k][share], data["labels"][k][share]) for k in range(STEPS)],
        replay=ReplaySet(replay, [(pool, data["tokens"], torch.arange(8))]),
        lr=1e-3,
        iterations=STEPS,
        warmup=1,
    )
    engine = Engine(model, build_terms(GIFT), progress=False)
    logs = engine.train_task(task)
    test = [(data["test_images"][rank::world], data["test_labels"][rank::world])]
    accuracy = zero_shot_accuracy(engine.model, tokenizer, test, CLASSES, ["a photo of a {}."])
    return {"logs": logs, "params": copy.deepcopy(dict(engine.model.named_parameters())), "accuracy": accuracy}


def process(rank: int, arch: Path, port: int, out: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        torch.save(train_and_evaluate(arch, rank, WORLD), out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[dict]]:
    out = tmp_path_factory.mktemp("ddp")
    arch = write_tiny_arch(out)
    mp.start_processes(process, args=(arch, free_port(), out), nprocs=WORLD, start_method="spawn")
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    try:
        single = train_and_evaluate(arch, rank=0, world=1)
    finally:
        torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)
    return single, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def test_every_logged_loss_term_equals_one_process(runs) -> None:
    single, ranks = runs
    assert single["logs"][-1]["awc"] > 0
    for rank in ranks:
        for mine, reference in zip(rank["logs"], single["logs"], strict=True):
            assert mine == pytest.approx(reference, rel=1e-12, abs=1e-15)


def test_the_update_equals_one_process_and_processes_stay_identical(runs) -> None:
    single, ranks = runs
    for name, reference in single["params"].items():
        assert torch.equal(ranks[0]["params"][name], ranks[1]["params"][name]), name
        # 1e-9 is a millionth of one step (lr 1e-3); attention's key bias, whose exact gradient is 0, moves by that
        assert torch.allclose(ranks[0]["params"][name], reference, rtol=0, atol=1e-9), name


def test_sharded_evaluation_counts_every_image_once(runs) -> None:
    single, ranks = runs
    assert ranks[0]["accuracy"] == ranks[1]["accuracy"] == pytest.approx(single["accuracy"], abs=1e-9)
