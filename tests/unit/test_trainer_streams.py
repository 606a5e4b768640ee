"""Batch streams: batch k depends on (seed, k) only, so a resumed run reads what the uninterrupted one read."""

from __future__ import annotations

from dataclasses import replace
from itertools import islice

import torch
from torch.utils.data import Dataset

from services.trainer.streams import BatchStream, in_order


class RandomlyAugmented(Dataset):
    """Item i is (i, a draw from torch's generator): the draw stands for random augmentation."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        return index, torch.rand(())


def take(stream: BatchStream, n: int) -> list[tuple[list[int], list[float]]]:
    return [(index.tolist(), draw.tolist()) for index, draw in islice(stream, n)]


def test_a_stream_entered_at_a_step_continues_the_uninterrupted_one() -> None:
    stream = BatchStream(RandomlyAugmented(), batch_size=4, seed=(0, 1, 0))
    whole = take(stream, 7)  # 2 batches per epoch: crosses three epochs
    torch.manual_seed(123)  # the global generator does not matter
    assert take(stream.from_step(3), 4) == whole[3:]
    assert take(stream, 7) == whole


def test_each_epoch_is_a_new_permutation_and_draws_are_fresh() -> None:
    batches = take(BatchStream(RandomlyAugmented(), batch_size=5, seed=(7,)), 4)
    epochs = [sorted(batches[0][0] + batches[1][0]), sorted(batches[2][0] + batches[3][0])]
    assert epochs == [list(range(10))] * 2
    assert batches[0][0] + batches[1][0] != batches[2][0] + batches[3][0]
    assert len({draw for _, draws in batches for draw in draws}) == 20


def test_ranks_read_contiguous_slices_of_the_global_batch() -> None:
    stream = BatchStream(RandomlyAugmented(), batch_size=4, seed=(3,))
    whole = take(stream, 3)
    parts = [take(BatchStream(RandomlyAugmented(), 4, (3,), rank=r, world=2), 3) for r in range(2)]
    for k, (index, draws) in enumerate(whole):
        assert parts[0][k][0] + parts[1][k][0] == index
        assert parts[0][k][1] + parts[1][k][1] == draws


def test_in_order_reads_every_item_or_a_shard_once() -> None:
    assert [i for batch, _ in in_order(RandomlyAugmented(), 4) for i in batch.tolist()] == list(range(10))
    assert [i for batch, _ in in_order(RandomlyAugmented(), 4, indices=range(1, 10, 3)) for i in batch] == [1, 4, 7]


def test_loader_workers_do_not_change_the_batches() -> None:
    stream = BatchStream(RandomlyAugmented(), batch_size=4, seed=(2,))
    whole = take(stream, 5)
    assert take(replace(stream, num_workers=2), 5) == whole
    assert take(replace(stream, num_workers=2).from_step(2), 3) == whole[2:]  # workers prefetching, entered mid-run
