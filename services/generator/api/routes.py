"""The HTTP routes of API.md. Thin: validate, call the job service, shape the answer."""

from __future__ import annotations

import functools
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Path, Query, Response
from fastapi.responses import StreamingResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.routing import Match, compile_path
from starlette.types import Scope

from gift_common import redis_keys
from gift_common.schemas import ErrorBody, InvalidRequestBody, JobRequest, JobState, JobStatus, ModelInfo
from services.generator import logs, tracing
from services.generator.api.archive import tar_stream
from services.generator.api.deps import JobsDep, SettingsDep, TenantDep
from services.generator.api.middleware import API_REGISTRY
from services.generator.stats import SnapshotCollector


def error_doc(description: str, model: type = ErrorBody, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """One OpenAPI response: its body's model, and the headers it carries (name -> what they say)."""
    specs = {name: {"description": text, "schema": {"type": "string"}} for name, text in (headers or {}).items()}
    return {"model": model, "description": description, **({"headers": specs} if specs else {})}


# Every error status a route can answer, with the body it sends (API.md, Errors), so /openapi.json tells the truth.
ERRORS = {
    400: error_doc("the body is not text: not valid UTF-8"),
    401: error_doc("GIFT_API_KEYS is set and the request lacks a valid key", headers={"WWW-Authenticate": "Bearer"}),
    404: error_doc("no such job or image (never made, expired, evicted, or another tenant's)"),
    409: error_doc(
        "the job is in the wrong state for this (cancel a finished job; archive an unfinished one; the job of a "
        "submission's Idempotency-Key expired as it was read)"
    ),
    410: error_doc("an image of the job was evicted from storage; submitting the job again makes it again"),
    413: error_doc("the body is larger than GIFT_MAX_BODY_BYTES"),
    422: error_doc("a schema rule (a list of issues) or a server limit (one line, field first)", InvalidRequestBody),
    429: error_doc(
        "the tenant has GIFT_MAX_QUEUED_JOBS_PER_TENANT unfinished jobs",
        headers={"Retry-After": "seconds to wait before submitting again"},
    ),
    503: error_doc(
        "Redis is unreachable or full: at GIFT_REDIS_ADMIT_FRACTION of its maxmemory for new jobs (or, for /readyz "
        "only, no worker was seen lately)",
        headers={"Retry-After": "seconds to wait, when Redis is unreachable or full"},
    ),
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Every route may get the 413 of an oversized body; every route that reads Redis, its 503."""
    return {status: ERRORS[status] for status in sorted({413, *statuses})}


class ConcreteFirstRoute(APIRoute):
    """A route with path parameters that yields a concrete path of the OpenAPI to that path's own routes.

    OpenAPI matches a concrete path before a template that also matches it; the router takes the first route that
    matches path and method, so without this GET /v1/images/generations would be GET /v1/images/{sha256}'s (a 422
    for the pattern) instead of the 405 of a wrong method on POST /v1/images/generations.
    """

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE and self.param_convertors and scope["path"] in concrete_paths(scope["app"]):
            return Match.NONE, {}
        return match, child_scope


@functools.cache
def concrete_paths(app: FastAPI) -> frozenset[str]:
    """The paths of /openapi.json without parameters, read once per app (not on each request it routes)."""
    return frozenset(path for path in app.openapi()["paths"] if not compile_path(path)[2])


V1_ERRORS = (401, 422, 503)  # a key, a path or query parameter, Redis
v1 = APIRouter(prefix="/v1", tags=["jobs"], route_class=ConcreteFirstRoute)
ops = APIRouter(tags=["operations"])


async def _job_id(
    job_id: Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="the id POST /v1/jobs returned")],
) -> str:
    """The path's job id, which from here on the request's log lines and span carry."""
    logs.add(job_id=job_id)
    tracing.annotate(job_id=job_id)
    return job_id


JobId = Annotated[str, Depends(_job_id)]
Sha256 = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="lower-case hex SHA-256 of the PNG bytes")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[!-~]+$",
        description="a fresh value per request, sent again on its retries: a retry returns the first job",
    ),
]


def _not_found(job_id: str) -> HTTPException:
    return HTTPException(status_code=404, detail=f"job {job_id} not found")


@v1.post(
    "/jobs",
    status_code=202,
    response_model=JobStatus,
    responses={
        202: {"headers": {"Location": {"description": "the job's URL", "schema": {"type": "string"}}}},
        **_errors(*V1_ERRORS, 400, 409, 429),
    },
)
async def submit_job(
    request: JobRequest, response: Response, jobs: JobsDep, tenant: TenantDep, idempotency_key: IdempotencyKey = None
) -> JobStatus:
    status = await jobs.submit(request, tenant, idempotency_key)
    response.headers["Location"] = f"/v1/jobs/{status.id}"
    return status


@v1.get("/jobs/{job_id}", response_model=JobStatus, responses=_errors(*V1_ERRORS, 404))
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


@v1.delete("/jobs/{job_id}", response_model=JobStatus, responses=_errors(*V1_ERRORS, 404, 409))
async def cancel_job(job_id: JobId, jobs: JobsDep, tenant: TenantDep) -> JobStatus:
    status = await jobs.cancel(job_id, tenant)
    if status is None:
        raise _not_found(job_id)
    return status


@v1.get(
    "/jobs/{job_id}/archive",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-tar": {}}}, **_errors(*V1_ERRORS, 404, 409, 410)},
)
async def job_archive(job_id: JobId, jobs: JobsDep, tenant: TenantDep) -> StreamingResponse:
    status = await jobs.status(job_id, tenant)
    if status is None:
        raise _not_found(job_id)
    if status.status != JobState.succeeded:
        raise HTTPException(409, f"job {job_id} is {status.status.value}; the archive exists once it has succeeded")
    request = await jobs.request_of(job_id)
    owner = request.cache_owner(tenant)
    missing = await jobs.missing_images(status, owner)
    if missing:
        raise HTTPException(410, f"images {missing[:10]} of job {job_id} were evicted from storage; submit it again")
    return StreamingResponse(
        tar_stream(status, request, jobs.archive_members(status, owner)),
        media_type="application/x-tar",
        headers={"Content-Disposition": f'attachment; filename="{job_id}.tar"'},
    )


@v1.get(
    "/images/{sha256}",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **_errors(*V1_ERRORS, 404)},
)
async def get_image(sha256: Sha256, jobs: JobsDep, tenant: TenantDep, settings: SettingsDep) -> Response:
    blob = await jobs.image(sha256, tenant)
    if blob is None:
        raise HTTPException(404, f"image {sha256} not found (never made, evicted, or another tenant's own)")
    audience = "private" if settings.api_keys else "public"  # a shared proxy must not serve a tenant's bytes to others
    return Response(blob, media_type="image/png", headers={"Cache-Control": f"{audience}, max-age=31536000, immutable"})


@v1.get("/models", response_model=list[ModelInfo], responses=_errors(401, 503))
async def list_models(jobs: JobsDep, _tenant: TenantDep) -> list[ModelInfo]:
    return await jobs.models()


@ops.get("/healthz", responses=_errors())
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@ops.get("/readyz", responses={200: {"content": {"application/json": {}}}, **_errors(503)})
async def readyz(jobs: JobsDep, settings: SettingsDep) -> Response:
    await jobs.redis.ping()
    seen = await jobs.redis.zcount(redis_keys.WORKERS, time.time() - settings.worker_seen_seconds, "+inf")
    if not seen:
        raise HTTPException(503, f"no worker has sent a heartbeat in the last {settings.worker_seen_seconds:g} s")
    return Response('{"status": "ready"}', media_type="application/json")


@ops.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}, **_errors(503)})
async def metrics(jobs: JobsDep, settings: SettingsDep) -> Response:
    snapshot = await jobs.metrics_snapshot(settings.worker_seen_seconds)
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(**snapshot))
    body = generate_latest(registry) + generate_latest(API_REGISTRY)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
