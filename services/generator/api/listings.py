"""Listings: a tenant's jobs, every tenant's for an admin, and the live workers; each costs its page.

Jobs come from the index that the job model's scripts keep (services/generator/job_index.py): a page is one
read-only script over a sorted set and one pipelined read of the page's jobs, whatever the number of jobs kept.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Annotated, cast

from fastapi import APIRouter, Query
from redis.asyncio import Redis

from gift_common import redis_keys
from gift_common.schemas import JobPage, JobState, JobStatus, JobSummary, WorkerInfo
from services.generator import logs, replies, store
from services.generator.api.deps import AdminDep, JobsDep, SettingsDep, TenantDep, Viewer, ViewerDep
from services.generator.api.jobs import JobService
from services.generator.api.routes import V1_ERRORS, ConcreteFirstRoute, JobId, _errors, _not_found

log = logging.getLogger("gift.api")

MAX_PAGE = 200
FILL_ROUNDS = 4  # reads of the index that skip jobs expired since the scope's last write, before a short page
SUMMARY_FIELDS = ("id", "tenant", "model", "status", "total", "cached", "replaced", "error", "created_at",
                  "finished_at", "steps")  # fmt: skip

listings = APIRouter(prefix="/v1", tags=["listings"], route_class=ConcreteFirstRoute)

Status = Annotated[JobState | None, Query(description="only jobs in this state")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="most jobs in the page")]
Cursor = Annotated[
    str | None,
    Query(pattern=r"^[0-9]{1,20}-[0-9a-f]{32}$", description="the next_cursor of the page before; none: the newest"),
]
Tenant = Annotated[
    str | None, Query(min_length=1, max_length=200, pattern=r"^[^:,]+$", description="only this tenant's jobs")
]


class JobListing:
    """Pages of one scope's index (a tenant's, or None: every tenant's), newest first."""

    def __init__(self, redis: Redis):
        self.redis = redis
        self._page = redis.register_script(store.LIST_PAGE)

    async def page(self, tenant: str | None, state: JobState | None, limit: int, cursor: str | None) -> JobPage:
        key = redis_keys.job_index(tenant, state.value if state else "all")
        position = tuple(cursor.split("-", 1)) if cursor else ("", "")
        jobs: list[JobSummary] = []
        for _ in range(FILL_ROUNDS):
            wanted = limit - len(jobs)
            flat = replies.texts(await self._page(keys=[key], args=[wanted + 1, *position]))
            entries = list(zip(flat[::2], flat[1::2], strict=True))
            taken = entries[:wanted]
            jobs += [job for job in await self._summaries([job_id for job_id, _ in taken]) if job is not None]
            if len(entries) <= wanted:
                return JobPage(jobs=jobs, next_cursor=None)
            position = (taken[-1][1], taken[-1][0])
            if len(jobs) == limit:
                break
        return JobPage(jobs=jobs, next_cursor=f"{position[0]}-{position[1]}")

    async def _summaries(self, job_ids: list[str]) -> list[JobSummary | None]:
        """Each job's summary, None for a job whose hash has expired; one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hmget(redis_keys.job(job_id), SUMMARY_FIELDS)
                pipe.hlen(redis_keys.job_images(job_id))
            answers = await pipe.execute()
        summaries: list[JobSummary | None] = []
        for values, done in zip(answers[::2], answers[1::2], strict=True):
            fields = {name: value for name, value in zip(SUMMARY_FIELDS, values, strict=True) if value is not None}
            if "status" not in fields:
                summaries.append(None)
                continue
            status = store.status_from({**fields, "done": str(done)}, None)
            summaries.append(JobSummary(**status.model_dump(), tenant=fields["tenant"], model=fields["model"]))
        return summaries


async def live_workers(redis: Redis, seen_seconds: float, viewer: Viewer) -> list[WorkerInfo]:
    """Workers with a heartbeat in the last ``seen_seconds``; a tenant sees only its own jobs' ids among theirs."""
    now = time.time()
    reply = await redis.zrangebyscore(redis_keys.WORKERS, now - seen_seconds, "+inf", withscores=True)
    beats = [(replies.text(worker), float(beat)) for worker, beat in cast(list[tuple[str, float]], reply)]
    if not beats:
        return []
    raw = replies.optional_texts(await redis.mget([redis_keys.worker(worker) for worker, _ in beats]))
    profiles = [json.loads(value) if value else {} for value in raw]
    held = sorted({job for profile in profiles for job in profile.get("held", {})})
    async with redis.pipeline(transaction=False) as pipe:
        for job in held:
            pipe.hget(redis_keys.job(job), "tenant")
        owners = dict(zip(held, replies.optional_texts(await pipe.execute()), strict=True))
    workers = []
    for (worker, beat), profile in zip(beats, profiles, strict=True):
        jobs = profile.get("held", {})
        visible = [job for job in jobs if viewer.tenant is None or owners.get(job) == viewer.tenant]
        workers.append(
            WorkerInfo(
                id=worker,
                models=profile.get("models", []),
                device=profile.get("device", "unknown"),
                batch_size=profile.get("batch_size", 0),
                heartbeat_age_seconds=round(max(0.0, now - beat), 3),
                chunks_held=sum(jobs.values()),
                images_done=profile.get("images_done", 0),
                jobs=sorted(visible),
            )
        )
    return workers


async def _tenant_of(jobs: JobService, job_id: str) -> str:
    tenant = replies.optional_text(await jobs.redis.hget(redis_keys.job(job_id), "tenant"))
    if tenant is None:
        raise _not_found(job_id)
    return tenant


@listings.get("/jobs", response_model=JobPage, responses=_errors(*V1_ERRORS))
async def list_jobs(
    jobs: JobsDep, tenant: TenantDep, status: Status = None, limit: Limit = 50, cursor: Cursor = None
) -> JobPage:
    return await JobListing(jobs.redis).page(tenant, status, limit, cursor)


@listings.get("/workers", response_model=list[WorkerInfo], responses=_errors(*V1_ERRORS))
async def list_workers(jobs: JobsDep, viewer: ViewerDep, settings: SettingsDep) -> list[WorkerInfo]:
    return await live_workers(jobs.redis, settings.worker_seen_seconds, viewer)


@listings.get("/admin/jobs", response_model=JobPage, tags=["admin"], responses=_errors(*V1_ERRORS))
async def admin_list_jobs(
    jobs: JobsDep,
    _admin: AdminDep,
    tenant: Tenant = None,
    status: Status = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> JobPage:
    return await JobListing(jobs.redis).page(tenant, status, limit, cursor)


@listings.get("/admin/jobs/{job_id}", response_model=JobStatus, tags=["admin"], responses=_errors(*V1_ERRORS, 404))
async def admin_get_job(job_id: JobId, jobs: JobsDep, _admin: AdminDep) -> JobStatus:
    status = await jobs.status(job_id, await _tenant_of(jobs, job_id))
    if status is None:
        raise _not_found(job_id)
    return status


@listings.delete(
    "/admin/jobs/{job_id}", response_model=JobStatus, tags=["admin"], responses=_errors(*V1_ERRORS, 404, 409)
)
async def admin_cancel_job(job_id: JobId, jobs: JobsDep, admin: AdminDep) -> JobStatus:
    tenant = await _tenant_of(jobs, job_id)
    logs.add(tenant=tenant)
    status = await jobs.cancel(job_id, tenant)
    if status is None:
        raise _not_found(job_id)
    log.info("job %s of tenant %s: cancel asked by admin %s", job_id, tenant, admin)
    return status
