"""The HTTP routes of API.md. Thin: validate, call the job service, shape the answer."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Response
from fastapi.responses import StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from gift_common import redis_keys
from gift_common.schemas import JobRequest, JobState, JobStatus, ModelInfo
from services.generator.api.archive import tar_stream
from services.generator.api.deps import JobsDep, SettingsDep, TenantDep
from services.generator.api.middleware import API_REGISTRY
from services.generator.stats import SnapshotCollector

v1 = APIRouter(prefix="/v1", tags=["jobs"])
ops = APIRouter(tags=["operations"])

JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="the id POST /v1/jobs returned")]
Sha256 = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="lower-case hex SHA-256 of the PNG bytes")]


def _not_found(job_id: str) -> HTTPException:
    return HTTPException(status_code=404, detail=f"job {job_id} not found")


@v1.post("/jobs", status_code=202, response_model=JobStatus)
async def submit_job(request: JobRequest, response: Response, jobs: JobsDep, tenant: TenantDep) -> JobStatus:
    status = await jobs.submit(request, tenant)
    response.headers["Location"] = f"/v1/jobs/{status.id}"
    return status


@v1.get("/jobs/{job_id}", response_model=JobStatus)
async def get_job(
    job_id: JobId,
    jobs: JobsDep,
    tenant: TenantDep,
    wait: Annotated[float, Query(ge=0, le=30, description="long-poll: return when terminal or after this")] = 0,
    images: Annotated[bool, Query(description="false leaves the images list empty (cheap progress polls)")] = True,
) -> JobStatus:
    status = await jobs.wait(job_id, tenant, wait, images=images)
    if status is None:
        raise _not_found(job_id)
    return status


@v1.delete("/jobs/{job_id}", response_model=JobStatus)
async def cancel_job(job_id: JobId, jobs: JobsDep, tenant: TenantDep) -> JobStatus:
    status = await jobs.cancel(job_id, tenant)
    if status is None:
        raise _not_found(job_id)
    return status


@v1.get("/jobs/{job_id}/archive", response_class=StreamingResponse)
async def job_archive(job_id: JobId, jobs: JobsDep, tenant: TenantDep) -> StreamingResponse:
    status = await jobs.status(job_id, tenant)
    if status is None:
        raise _not_found(job_id)
    if status.status != JobState.succeeded:
        raise HTTPException(409, f"job {job_id} is {status.status.value}; the archive exists once it has succeeded")
    missing = await jobs.missing_images(status)
    if missing:
        raise HTTPException(410, f"images {missing[:10]} of job {job_id} were evicted from storage; submit it again")
    request = await jobs.request_of(job_id)
    return StreamingResponse(
        tar_stream(status, request, jobs.archive_members(status)),
        media_type="application/x-tar",
        headers={"Content-Disposition": f'attachment; filename="{job_id}.tar"'},
    )


@v1.get("/images/{sha256}", response_class=Response, responses={200: {"content": {"image/png": {}}}})
async def get_image(sha256: Sha256, jobs: JobsDep, _tenant: TenantDep) -> Response:
    blob = await jobs.image(sha256)
    if blob is None:
        raise HTTPException(404, f"image {sha256} not found (never made, or evicted from storage)")
    return Response(blob, media_type="image/png", headers={"Cache-Control": "public, max-age=31536000, immutable"})


@v1.get("/models", response_model=list[ModelInfo])
async def list_models(jobs: JobsDep, _tenant: TenantDep) -> list[ModelInfo]:
    return await jobs.models()


@ops.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@ops.get("/readyz")
async def readyz(jobs: JobsDep, settings: SettingsDep) -> Response:
    await jobs.redis.ping()
    seen = await jobs.redis.zcount(redis_keys.WORKERS, time.time() - settings.worker_seen_seconds, "+inf")
    if not seen:
        raise HTTPException(503, f"no worker has sent a heartbeat in the last {settings.worker_seen_seconds:g} s")
    return Response('{"status": "ready"}', media_type="application/json")


@ops.get("/metrics", response_class=Response)
async def metrics(jobs: JobsDep, settings: SettingsDep) -> Response:
    snapshot = await jobs.metrics_snapshot(settings.worker_seen_seconds)
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(**snapshot))
    body = generate_latest(registry) + generate_latest(API_REGISTRY)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
