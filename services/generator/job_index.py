"""The listings' index in Redis: each tenant's jobs, and the deployment's, newest first, by state.

A listing must cost its page, not the number of jobs kept (a million is allowed for), so jobs are indexed in
sorted sets scored by creation time (integer microseconds), per scope (a tenant's, and the deployment's for
admins): ``all``, one per state, and ``ended`` (a finished job -> when its hash expires). The job model's scripts
(store.py, with the functions of lua/job_index_functions.lua) keep them in the same atomic step as the job's own
writes:

- ADMIT_JOB adds the job (``index_add``); RECORD_IMAGES moves a queued job to ``running`` and ``end_job`` to its
  end state (``index_move``), which also notes when the job's hash will expire;
- every such write first drops up to 32 jobs whose hash has expired (``index_tidy``), so the index
  holds what the jobs' TTLs hold, plus what expired since the scope's last write; a scope with nothing live
  expires as a whole, a job TTL after its last write, by when every job it names has expired too.

A listing skips a job whose hash is gone (expired since the last write). Jobs submitted before the index existed
are not in it; they expire within a job TTL.
"""

from __future__ import annotations

from gift_common import redis_keys
from gift_common.schemas import JobState

PARTS = ("all", *(state.value for state in JobState), "ended")  # one scope's sets, in KEYS order


def index_keys(tenant: str) -> list[str]:
    """The index's KEYS in every script that changes a job: the tenant's sets, then the deployment's."""
    return [redis_keys.job_index(tenant, part) for part in PARTS] + [redis_keys.job_index(None, part) for part in PARTS]
