"""Endless, reproducible batch streams that a resumed run can enter at any step, and that DDP ranks can share.

Batch k of a stream is a pure function of (seed, k): epoch e = k // batches_per_epoch shuffles with its own seed,
and every sample of batch k gets its own augmentation seed. So a run resumed at step s reads batch s next, exactly
as the uninterrupted run did, without touching the s batches before it, whatever the number of loader workers.
Under DDP, rank r of W takes the r-th contiguous slice of each global batch: the ranks' slices, gathered in rank
order, are the batch one process would see.

Feeding a GPU: loader workers decode and augment in parallel, each `PREFETCH` batches ahead, so that one slow batch
does not stall a step; on CUDA, batches land in pinned memory and the engine copies them without blocking. Workers
are not made persistent: a stream's loader is iterated once, endlessly, so its workers live for the whole task
anyway, and an evaluation or cache pass reads its loader once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

Seed = tuple[int, ...]
PREFETCH = 4  # batches each worker holds ready: a slow one (a large image file, a busy disk) is absorbed


@dataclass(frozen=True)
class BatchStream:
    """Global batches of `batch_size` from `dataset`, reshuffled every epoch, this rank's slice of each."""

    dataset: Dataset
    batch_size: int
    seed: Seed
    num_workers: int = 0
    pin_memory: bool = False
    rank: int = 0
    world: int = 1
    start: int = 0

    def __post_init__(self) -> None:
        if self.batch_size % self.world:
            raise ValueError(f"batch size {self.batch_size} does not split evenly over {self.world} processes")

    def from_step(self, step: int) -> BatchStream:
        """The same stream entered at global step `step` (the engine calls this on resume)."""
        return replace(self, start=step)

    def __iter__(self) -> Iterator[Any]:
        loader = DataLoader(
            SeededItems(self.dataset),
            batch_sampler=_Sampler(len(self.dataset), self.batch_size, self.seed, self.rank, self.world, self.start),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            prefetch_factor=PREFETCH if self.num_workers else None,
        )
        return iter(loader)


@dataclass(frozen=True)
class _Sampler:
    """Yields, batch after batch forever, this rank's [(index, augmentation seed), ...]."""

    size: int
    batch_size: int
    seed: Seed
    rank: int
    world: int
    start: int

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        per_epoch = max(1, self.size // self.batch_size)
        step = self.start
        while True:
            epoch, position = divmod(step, per_epoch)
            order = np.random.default_rng([*self.seed, epoch]).permutation(self.size)
            batch = order[position * self.batch_size : (position + 1) * self.batch_size]
            seeds = np.random.default_rng([*self.seed, epoch, position]).integers(2**63 - 1, size=len(batch))
            share = len(batch) // self.world
            mine = slice(self.rank * share, (self.rank + 1) * share)
            yield [(int(i), int(s)) for i, s in zip(batch[mine], seeds[mine], strict=True)]
            step += 1


class SeededItems(Dataset):
    """Looks items up by (index, seed), seeding torch's generator first, so random augmentation is reproducible."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)  # the CPU generator the transforms draw from; torch.manual_seed
            return self.dataset[index]  # costs 70 us more per item (it also seeds accelerators), a tenth of an FT step


def in_order(
    dataset: Dataset,
    batch_size: int,
    num_workers: int = 0,
    indices: Sequence[int] | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    """Every item (or those of `indices`) once, in order: evaluation and the teacher cache."""
    sampler = range(len(dataset)) if indices is None else indices
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      pin_memory=pin_memory, prefetch_factor=PREFETCH if num_workers else None)  # fmt: skip
