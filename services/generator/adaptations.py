"""Adaptation jobs in Redis, as the API and the workers both see them: the record, its keys, how it ends.

An adaptation job is a hash in its tenant's scope (``redis_keys.adaptation``), its archive beside it, and one entry
in the ``redis_keys.ADAPTATIONS`` stream, which workers read through the consumer group ``redis_keys.GROUP`` like an
image job's work stream: an entry a worker holds is kept claimed by its heartbeat, and one left idle past
GIFT_CLAIM_TIMEOUT_SECONDS (its worker died) is taken over, resuming from the job's last checkpoint. Every end
(succeeded, failed, cancelled) goes through one script (store.END_ADAPTATION) that ends only a live job, so a
cancel and a finish cannot both win.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from gift_common import redis_keys
from gift_common.schemas import AdaptationStatus, JobState


@dataclass(frozen=True)
class Adaptation:
    """What a worker needs to train one: the job's parameters as the API stored them."""

    id: str
    tenant: str
    model: str
    steps: int
    rank: int
    learning_rate: float
    seed: int
    shared: bool
    name: str | None

    def record(self) -> dict[str, str]:
        """The hash a new job starts with (queued, step 0)."""
        fields = {"id": self.id, "tenant": self.tenant, "model": self.model, "status": JobState.queued.value,
                  "step": "0", "steps": str(self.steps), "rank": str(self.rank),
                  "learning_rate": repr(self.learning_rate), "seed": str(self.seed), "shared": str(int(self.shared)),
                  "created": repr(time.time())}  # fmt: skip
        return fields | ({"name": self.name} if self.name is not None else {})

    @classmethod
    def from_record(cls, fields: dict[str, str]) -> Adaptation:
        return cls(fields["id"], fields["tenant"], fields["model"], int(fields["steps"]), int(fields["rank"]),
                   float(fields["learning_rate"]), int(fields["seed"]), fields["shared"] == "1",
                   fields.get("name"))  # fmt: skip


def status_of(fields: dict[str, str]) -> AdaptationStatus:
    finished = fields.get("finished")
    return AdaptationStatus(id=fields["id"], model=fields["model"], status=JobState(fields["status"]),
                            step=int(fields["step"]), steps=int(fields["steps"]), adapter=fields.get("adapter"),
                            error=fields.get("error"), created=float(fields["created"]),
                            finished=float(finished) if finished else None)  # fmt: skip


def end_keys(adaptation_id: str, tenant: str) -> list[str]:
    return [
        redis_keys.adaptation(adaptation_id, tenant),
        redis_keys.adaptation_archive(adaptation_id, tenant),
        redis_keys.adaptation_checkpoint(adaptation_id, tenant),
    ]


def end_args(adaptation_id: str, state: JobState, ttl: int, **fields: str) -> list[str | int]:
    """END_ADAPTATION's arguments: the new state, now, the record's TTL, the channel, then ``fields`` to set."""
    args: list[str | int] = [state.value, repr(time.time()), ttl, redis_keys.ADAPTATION_ENDED, adaptation_id]
    for name, value in fields.items():
        args += [name, value]
    return args
