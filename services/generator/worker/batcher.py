"""Which images go into the next pipeline call: packing and fairness, with no I/O.

Images of several jobs share a call when they agree on everything the call takes as one value (model, steps,
guidance, size); prompts, negative prompts and seeds are per image. Jobs take turns, one image each, so a
4,000-image job cannot starve an 8-image one, and the job that opens a batch rotates from batch to batch.
A chunk (one stream entry) is complete, and may be acknowledged, when every image of it is recorded.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    """What all images of one pipeline call must agree on."""

    model: str
    num_inference_steps: int
    guidance_scale: float
    height: int
    width: int


@dataclass(frozen=True)
class Task:
    """One image to make."""

    job_id: str
    entry_id: str
    index: int
    prompt: str
    negative_prompt: str | None
    seed: int
    shape: Shape
    key: str  # the content key (gift_common.content_key.image_key)
    owner: str | None = None  # the tenant of a tenant-scoped cache (JobRequest.cache_owner), None when shared


class Backlog:
    """Tasks read from the queue and not yet recorded, grouped by job in turn order."""

    def __init__(self) -> None:
        self._queues: OrderedDict[str, deque[Task]] = OrderedDict()
        self._open: dict[tuple[str, str], set[int]] = {}

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def add_chunk(self, tasks: list[Task]) -> None:
        for task in tasks:
            self._queues.setdefault(task.job_id, deque()).append(task)
            self._open.setdefault((task.job_id, task.entry_id), set()).add(task.index)

    def next_batch(self, limit: int, per_model: Mapping[str, int] | None = None) -> list[Task]:
        """Up to ``limit`` tasks of one shape (``per_model[model]`` where given), taken round-robin across jobs;
        they leave the backlog."""
        if not self._queues:
            return []
        first = next(iter(self._queues))
        shape = self._queues[first][0].shape
        limit = (per_model or {}).get(shape.model, limit)
        turn = [job for job, queue in self._queues.items() if queue[0].shape == shape]
        self._queues.move_to_end(first)  # the next batch opens with the next job
        batch: list[Task] = []
        while len(batch) < limit and turn:
            for job in list(turn):
                queue = self._queues[job]
                batch.append(queue.popleft())
                if not queue or queue[0].shape != shape:
                    turn.remove(job)
                if not queue:
                    del self._queues[job]
                if len(batch) == limit:
                    break
        return batch

    def complete(self, task: Task) -> bool:
        """Mark a task recorded; True when its chunk has no image left, so the entry may be acknowledged."""
        remaining = self._open.get((task.job_id, task.entry_id))
        if remaining is None:
            return False
        remaining.discard(task.index)
        if remaining:
            return False
        del self._open[(task.job_id, task.entry_id)]
        return True

    def put_back(self, tasks: list[Task]) -> None:
        """Return an unfinished batch to the front of its jobs' turns, to be made again (open chunks only)."""
        for task in reversed(tasks):
            if (task.job_id, task.entry_id) in self._open:
                self._queues.setdefault(task.job_id, deque()).appendleft(task)

    def drop_chunks(self, tasks: list[Task]) -> dict[str, list[str]]:
        """Forget the chunks of ``tasks`` with all their images; returns their entry ids by job, to release."""
        chunks = {(task.job_id, task.entry_id) for task in tasks} & self._open.keys()
        for job, entry in chunks:
            del self._open[(job, entry)]
        for job in {job for job, _ in chunks} & self._queues.keys():
            kept = deque(task for task in self._queues[job] if (job, task.entry_id) not in chunks)
            if kept:
                self._queues[job] = kept
            else:
                del self._queues[job]
        dropped: dict[str, list[str]] = {}
        for job, entry in sorted(chunks):
            dropped.setdefault(job, []).append(entry)
        return dropped

    def drop_job(self, job_id: str) -> list[str]:
        """Forget a job that ended (cancelled, failed); returns its entry ids, to acknowledge."""
        self._queues.pop(job_id, None)
        entries = [entry for job, entry in self._open if job == job_id]
        for entry in entries:
            del self._open[(job_id, entry)]
        return entries

    def held(self) -> dict[str, list[str]]:
        """Entry ids still open, by job: what the heartbeat keeps claimed."""
        held: dict[str, list[str]] = {}
        for job, entry in self._open:
            held.setdefault(job, []).append(entry)
        return held
