"""Which images go into the next pipeline call: packing and fairness, with no I/O.

Images of several jobs share a call when they agree on everything the call takes as one value (model, steps,
guidance, size, scheduler, adapter and its scale); prompts, negative prompts and seeds are per image. Tenants take
turns, one image each, and within a tenant its jobs of the highest priority take turns: so a tenant's sixty jobs
get no more than another tenant's one, and a 4,000-image job cannot starve an 8-image one. Turns go to the least
recently served, so the tenant and the job that open a batch rotate from batch to batch.
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
    scheduler: str | None = None  # one of the model's schedulers; None: the one it loaded
    adapter: str | None = None  # the SHA-256 of a LoRA adapter applied to the whole call; None: the base model
    adapter_scale: float = 1.0


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
    tenant: str = ""
    priority: int = 0  # JobRequest.priority: within a tenant, higher goes first


class Backlog:
    """Tasks read from the queue and not yet recorded, grouped by job; jobs and tenants in least recently served
    order."""

    def __init__(self) -> None:
        self._queues: OrderedDict[str, deque[Task]] = OrderedDict()
        self._tenants: OrderedDict[str, None] = OrderedDict()
        self._open: dict[tuple[str, str], set[int]] = {}

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def add_chunk(self, tasks: list[Task]) -> None:
        for task in tasks:
            self._queues.setdefault(task.job_id, deque()).append(task)
            self._tenants.setdefault(task.tenant)
            self._open.setdefault((task.job_id, task.entry_id), set()).add(task.index)

    def next_batch(self, limit: int, per_model: Mapping[str, int] | None = None) -> list[Task]:
        """Up to ``limit`` tasks of one shape (``per_model[model]`` where given), taken in turns across tenants, then
        jobs; they leave the backlog."""
        tenants = self._tenant_turns()
        opening = self._next_job(tenants[0], None) if tenants else None
        if opening is None:
            return []
        shape = self._queues[opening][0].shape
        limit = (per_model or {}).get(shape.model, limit)
        batch: list[Task] = []
        while len(batch) < limit and tenants:
            for tenant in list(tenants):
                job = self._next_job(tenant, shape)
                if job is None:
                    tenants.remove(tenant)
                    continue
                queue = self._queues[job]
                batch.append(queue.popleft())
                if queue:
                    self._queues.move_to_end(job)
                else:
                    del self._queues[job]
                self._tenants.move_to_end(tenant)
                if len(batch) == limit:
                    break
        return batch

    def _tenant_turns(self) -> list[str]:
        """Tenants with tasks, least recently served first."""
        waiting = {queue[0].tenant for queue in self._queues.values()}
        for tenant in [tenant for tenant in self._tenants if tenant not in waiting]:
            del self._tenants[tenant]
        return list(self._tenants)

    def _next_job(self, tenant: str, shape: Shape | None) -> str | None:
        """The tenant's job whose turn it is: the highest priority, the least recently served among equals."""
        best: Task | None = None
        for queue in self._queues.values():
            head = queue[0]
            if (
                head.tenant == tenant
                and shape in (None, head.shape)
                and (best is None or head.priority > best.priority)
            ):
                best = head
        return best.job_id if best else None

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
                self._tenants.setdefault(task.tenant)

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
