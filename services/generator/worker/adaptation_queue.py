"""The worker's side of adaptation jobs in Redis (services/generator/adaptations.py): take one, keep it, record its
progress and checkpoints, end it.

A job is taken like an image job's chunk: a dead worker's entry, idle past GIFT_CLAIM_TIMEOUT_SECONDS, first (the
job resumes from its checkpoint), else a new one; an entry delivered GIFT_MAX_DELIVERIES times fails its job. The
entry is acknowledged only once the job has ended, so a worker killed at any point leaves it to be taken over.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import cast

from redis import Redis
from redis import exceptions as redis_errors

from gift_common import redis_keys
from gift_common.schemas import JobState
from services.generator import replies
from services.generator.adaptations import Adaptation, end_args, end_keys
from services.generator.store import ADAPTATION_STEP, END_ADAPTATION

log = logging.getLogger("gift.worker")


@dataclass(frozen=True)
class Held:
    """An adaptation job this worker holds: its stream entry and its parameters."""

    entry_id: str
    job: Adaptation

    @property
    def stream(self) -> str:
        return redis_keys.adaptations(self.job.model)


class AdaptationQueue:
    """``redis`` decodes replies to text; ``blobs`` is the same server without decoding, for archives and
    checkpoints."""

    def __init__(self, redis: Redis, blobs: Redis, consumer: str, claim_timeout: float, max_deliveries: int, ttl: int):
        self.redis, self.blobs, self.consumer = redis, blobs, consumer
        self.idle_ms, self.max_deliveries, self.ttl = int(claim_timeout * 1000), max_deliveries, ttl
        self._step = redis.register_script(ADAPTATION_STEP)
        self._end = redis.register_script(END_ADAPTATION)

    def ensure_group(self, model: str) -> None:
        try:
            self.redis.xgroup_create(redis_keys.adaptations(model), redis_keys.GROUP, id="0", mkstream=True)
        except redis_errors.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def take(self, model: str) -> Held | None:
        """A live job of ``model`` for this worker: a dead worker's first, else a new one; None when none waits."""
        stream = redis_keys.adaptations(model)
        range_ = self.redis.xpending_range(stream, redis_keys.GROUP, "-", "+", 10, idle=self.idle_ms)
        pendings = cast(list[replies.Pending], range_)  # redis-py's type is looser than its parsed reply
        for pending in pendings:
            claimed = self.redis.xclaim(stream, redis_keys.GROUP, self.consumer, self.idle_ms, [pending["message_id"]])
            for entry_id, fields in replies.entries(claimed):
                if pending["times_delivered"] >= self.max_deliveries:
                    reason = f"its training was taken up {pending['times_delivered']} times and never finished"
                    self._end_entry(stream, entry_id, fields, JobState.failed, error=reason)
                elif (held := self._open(stream, entry_id, fields)) is not None:
                    log.info("adaptation %s: taken over from %s", held.job.id, pending["consumer"])
                    return held
        read = self.redis.xreadgroup(redis_keys.GROUP, self.consumer, {stream: ">"}, count=1)
        for entry_id, fields in replies.group_read(read):
            if (held := self._open(stream, entry_id, fields)) is not None:
                return held
        return None

    def _open(self, stream: str, entry_id: str, fields: dict[str, str]) -> Held | None:
        """The entry's job when it is still live; an ended one's entry is dropped."""
        record = replies.text_hash(self.redis.hgetall(redis_keys.adaptation(fields["id"], fields["tenant"])))
        if record.get("status") not in (JobState.queued.value, JobState.running.value):
            self._drop(stream, entry_id)
            return None
        return Held(entry_id, Adaptation.from_record(record))

    def keep(self, held: Held) -> None:
        """Claim the entry afresh (the heartbeat's), so that it never looks abandoned while this worker lives."""
        self.redis.xclaim(held.stream, redis_keys.GROUP, self.consumer, 0, [held.entry_id], justid=True)

    def release(self, held: Held) -> None:
        """On a clean stop: mark the entry long idle, so that another worker takes it over at once."""
        self.redis.xclaim(
            held.stream, redis_keys.GROUP, self.consumer, 0, [held.entry_id], idle=self.idle_ms * 10, justid=True
        )

    def archive(self, held: Held) -> bytes | None:
        return replies.data(self.blobs.get(redis_keys.adaptation_archive(held.job.id, held.job.tenant)))

    def checkpoint(self, held: Held) -> bytes | None:
        return replies.data(self.blobs.get(redis_keys.adaptation_checkpoint(held.job.id, held.job.tenant)))

    def save_checkpoint(self, held: Held, data: bytes) -> None:
        """Replace the checkpoint (a SET is atomic: a reader finds the old or the new one). It expires like an ended
        job's record, in case the job ends (a cancel) between the progress write and this one."""
        self.blobs.set(redis_keys.adaptation_checkpoint(held.job.id, held.job.tenant), data, ex=self.ttl)

    def progress(self, held: Held, step: int) -> bool:
        """Record ``step`` done; False when the job is no longer live (cancelled), which stops its training."""
        return bool(self._step(keys=[redis_keys.adaptation(held.job.id, held.job.tenant)], args=[step]) == "running")

    def succeed(self, held: Held, adapter: str) -> None:
        self._finish(held, JobState.succeeded, adapter=adapter, step=str(held.job.steps))

    def fail(self, held: Held, error: str) -> None:
        log.error("adaptation %s failed: %s", held.job.id, error)
        self._finish(held, JobState.failed, error=error)

    def drop(self, held: Held) -> None:
        """The job ended elsewhere (cancelled): only its entry is left to remove."""
        self._drop(held.stream, held.entry_id)

    def _finish(self, held: Held, state: JobState, **fields: str) -> None:
        self._end_entry(held.stream, held.entry_id, {"id": held.job.id, "tenant": held.job.tenant}, state, **fields)

    def _end_entry(self, stream: str, entry_id: str, fields: dict[str, str], state: JobState, **extra: str) -> None:
        keys = end_keys(fields["id"], fields["tenant"])
        self._end(keys=keys, args=end_args(fields["id"], state, self.ttl, **extra))
        self._drop(stream, entry_id)

    def _drop(self, stream: str, entry_id: str) -> None:
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(stream, redis_keys.GROUP, entry_id)
            pipe.xdel(stream, entry_id)
            pipe.execute()
