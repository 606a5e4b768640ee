"""``GET /v1/jobs/{id}/events``: a job's progress as Server-Sent Events (API.md, Event stream).

Image events are numbered by the job's ``order`` list (store.py), the order in which images were recorded, so the
``id`` of the n-th is ``n`` and a client reconnecting with ``Last-Event-ID: n`` gets the rest without repeats. The
stream is woken by the pub/sub of api/events.py and re-checks the job every ``RECHECK_SECONDS`` besides.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Header, Response
from fastapi.responses import StreamingResponse

from gift_common import redis_keys
from gift_common.schemas import JobState, JobStatus
from services.generator import store
from services.generator.api.deps import JobsDep, SettingsDep, TenantDep
from services.generator.api.events import wait_for_event
from services.generator.api.jobs import JobService
from services.generator.api.routes import V1_ERRORS, ConcreteFirstRoute, JobId, _errors, _not_found

END_ID = "end"  # the id of the last event: a reconnect after it is told to stop (204)
MEDIA_TYPE = "text/event-stream"

streams = APIRouter(prefix="/v1", tags=["jobs"], route_class=ConcreteFirstRoute)


@streams.get(
    "/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {"content": {MEDIA_TYPE: {}}, "description": "events `progress`, `image` and `end` (API.md)"},
        204: {"description": "Last-Event-ID was the `end` event's: the stream is over, do not reconnect"},
        **_errors(*V1_ERRORS, 404),
    },
)
async def job_events(
    job_id: JobId,
    jobs: JobsDep,
    tenant: TenantDep,
    settings: SettingsDep,
    last_event_id: Annotated[
        str | None,
        Header(pattern=rf"^(\d{{1,9}}|{END_ID})$", description="resume after this event (an image's number, or end)"),
    ] = None,
) -> Response:
    status = await jobs.status(job_id, tenant, images=False)
    if status is None:
        raise _not_found(job_id)
    if last_event_id == END_ID:
        return Response(status_code=204)
    events = _events(jobs, job_id, tenant, int(last_event_id or 0), settings.events_keepalive_seconds)
    return StreamingResponse(
        events, media_type=MEDIA_TYPE, headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )


async def _events(jobs: JobService, job_id: str, tenant: str, sent: int, keepalive: float) -> AsyncIterator[str]:
    """The job's events after the ``sent``-th image; a comment after ``keepalive`` seconds of silence."""
    loop = asyncio.get_running_loop()
    progress: tuple[int, int, JobState] | None = None
    quiet_since = loop.time()
    while True:
        async with jobs.events.watch(job_id, progress=True) as changed:
            status = await jobs.status(job_id, tenant, images=False)
            if status is None:  # expired or deleted under us: nothing more will come
                return
            out = [
                _event("image", record, str(sent + n)) for n, record in enumerate(await _images(jobs, job_id, sent), 1)
            ]
            sent += len(out)
            if (status.done, status.cached, status.status) != progress:
                progress = (status.done, status.cached, status.status)
                out.append(_event("progress", _progress(status)))
            if status.status.terminal:
                out.append(_event("end", status.model_dump(mode="json"), END_ID))
            if out:
                quiet_since = loop.time()
                yield "".join(out)
            elif loop.time() - quiet_since >= keepalive:
                quiet_since = loop.time()
                yield ": keep-alive\n\n"
            if status.status.terminal:
                return
            await wait_for_event(changed, keepalive)


async def _images(jobs: JobService, job_id: str, sent: int) -> list[dict[str, Any]]:
    """The image records recorded after the first ``sent``, in the order they were recorded."""
    indices = await jobs.redis.lrange(redis_keys.job_order(job_id), sent, -1)
    if not indices:
        return []
    records = await jobs.redis.hmget(redis_keys.job_images(job_id), indices)
    images = [store.image_info(json.loads(record)) for record in records if record is not None]
    return [image.model_dump(mode="json") for image in images]


def _progress(status: JobStatus) -> dict[str, object]:
    return {"status": status.status.value, "done": status.done, "total": status.total, "cached": status.cached}


def _event(name: str, data: Mapping[str, object], event_id: str | None = None) -> str:
    """One SSE event; JSON never holds a raw newline, so ``data`` is one line."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
