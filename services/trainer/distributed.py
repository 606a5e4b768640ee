"""Data parallelism over the processes `torchrun` starts (gloo on CPU, nccl on GPU); a no-op in one process.

Why not `torch.nn.parallel.DistributedDataParallel` itself: its autograd hooks assume one forward and one backward
per step. A GIFT step calls the encoders several times and runs two backward passes, with AWC reading the first
pass's gradient in between as its Fisher; and its contrastive losses couple the samples of a batch. So the engine
does what DDP does, explicitly, at the points where the method needs it:

- each backward pass is followed by one all-reduce that averages `.grad` over processes. After the replay pass,
  `.grad` is the global-batch gradient of distill + ITA on every process, so AWC's Fisher is the global one. After
  the task pass, the mean of (that shared gradient + each process's task gradient) is the shared gradient plus
  the mean task gradient: the two passes still sum to the global-batch gradient.
- replay embeddings, prompts and teacher embeddings are all-gathered (with gradient) before the B×B logits, so
  distillation and ITA see the global batch, not W separate B/W batches. Every process computes the same loss;
  the gather's backward sums the W copies of the gradient and the average above divides by W again.
- the task loss is a mean over samples, so the mean over processes of per-process means is the global mean.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import Tensor

from services.devices import resolve_device


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """The process that writes files and talks to the generator."""
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def gather(tensor: Tensor) -> Tensor:
    """Every process's tensor concatenated along dim 0 in rank order; differentiable w.r.t. this process's part."""
    return _Gather.apply(tensor) if active() else tensor


class _Gather(torch.autograd.Function):
    """All-gather whose backward hands each process the sum, over processes, of the gradient of its own rows."""

    @staticmethod
    def forward(ctx: object, tensor: Tensor) -> Tensor:
        parts = [torch.empty_like(tensor) for _ in range(world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> Tensor:
        summed = grad.clone()
        dist.all_reduce(summed)
        return summed.chunk(world_size())[rank()]


def average_(tensors: Iterable[Tensor]) -> None:
    """Replace each tensor, in place, by its mean over processes, in one all-reduce."""
    tensors = list(tensors)
    if not active() or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= world_size()
    for tensor, mean in zip(tensors, flat.split([t.numel() for t in tensors]), strict=True):
        tensor.copy_(mean.view_as(tensor))


def average_gradients(params: Iterable[Tensor]) -> None:
    """`.grad` averaged over processes; every process has the same parameters without a gradient."""
    average_(p.grad for p in params if p.grad is not None)


def total(values: Iterable[int | float], device: torch.device | str) -> list[float]:
    """Sums over processes of a few numbers, e.g. correct and seen counts of a sharded evaluation."""
    summed = torch.tensor(list(values), dtype=torch.float64, device=device)
    if active():
        dist.all_reduce(summed)
    return summed.tolist()


def broadcast_(tensor: Tensor) -> None:
    """Process 0's tensor, in place, on every process: a choice all must make alike (synthetic.filter's pairs)."""
    if active():
        dist.broadcast(tensor, src=0)


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Start every process from process 0's weights, as DDP does."""
    if active():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


@contextmanager
def session(requested_device: str) -> Iterator[torch.device]:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); yield this process's device."""
    device = resolve_device(requested_device, index=local_rank())  # under torchrun: cuda:LOCAL_RANK
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        yield device
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield device
    finally:
        dist.destroy_process_group()
