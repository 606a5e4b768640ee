"""The adaptation routes of API.md: queue a LoRA training job on an uploaded archive, read it, cancel it. Thin: the
service checks and queues."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request

from gift_common.schemas import AdaptationStatus, Seed, Text
from services.generator.adaptations import Adaptation
from services.generator.api.adaptations import new_id
from services.generator.api.deps import AdaptationsDep, SettingsDep, TenantDep
from services.generator.api.routes import V1_ERRORS, ConcreteFirstRoute, _errors, error_doc

adaptations = APIRouter(prefix="/v1", tags=["adaptations"], route_class=ConcreteFirstRoute)
AdaptationId = Annotated[str, Path(pattern=r"^ad-[0-9a-f]{32}$", description="the id POST /v1/adaptations returned")]
NOT_FOUND = error_doc("no such adaptation (never submitted, expired, or another tenant's)")
ARCHIVE = {media: {"schema": {"type": "string", "format": "binary"}} for media in ("application/x-tar",
                                                                                   "application/gzip")}  # fmt: skip


def _not_found(adaptation_id: str) -> HTTPException:
    return HTTPException(404, f"adaptation {adaptation_id} not found (never submitted, expired, or another tenant's)")


@adaptations.post(
    "/adaptations",
    status_code=202,
    response_model=AdaptationStatus,
    openapi_extra={"requestBody": {"required": True, "content": ARCHIVE}},
    responses={**_errors(*V1_ERRORS), 413: error_doc("the archive is larger than GIFT_MAX_ADAPTATION_BYTES")},
)
async def submit_adaptation(
    request: Request,
    service: AdaptationsDep,
    tenant: TenantDep,
    settings: SettingsDep,
    model: Annotated[Text | None, Query(description="the base model; unset: GIFT_DEFAULT_MODEL")] = None,
    steps: Annotated[int, Query(ge=1, description="training steps (at most GIFT_MAX_ADAPTATION_STEPS)")] = 200,
    rank: Annotated[int, Query(ge=1, description="the LoRA's rank (at most GIFT_MAX_ADAPTER_RANK)")] = 4,
    learning_rate: Annotated[float, Query(gt=0, le=1, description="AdamW's learning rate")] = 1e-4,
    seed: Annotated[Seed, Query(description="draws the noise, timesteps and image order")] = 0,
    name: Annotated[Text | None, Query(max_length=200, description="the resulting adapter's label")] = None,
    shared: Annotated[bool, Query(description="true: the resulting adapter is every tenant's")] = False,
) -> AdaptationStatus:
    job = Adaptation(new_id(), tenant, model or settings.default_model, steps, rank, learning_rate, seed, shared, name)
    return await service.submit(await request.body(), job)


@adaptations.get(
    "/adaptations/{adaptation_id}", response_model=AdaptationStatus, responses={**_errors(*V1_ERRORS), 404: NOT_FOUND}
)
async def get_adaptation(adaptation_id: AdaptationId, service: AdaptationsDep, tenant: TenantDep) -> AdaptationStatus:
    if (status := await service.status(adaptation_id, tenant)) is None:
        raise _not_found(adaptation_id)
    return status


@adaptations.delete(
    "/adaptations/{adaptation_id}",
    response_model=AdaptationStatus,
    responses={**_errors(*V1_ERRORS), 404: NOT_FOUND, 409: error_doc("it has succeeded or failed already")},
)
async def cancel_adaptation(
    adaptation_id: AdaptationId, service: AdaptationsDep, tenant: TenantDep
) -> AdaptationStatus:
    """Its worker stops at its next training step; no adapter is made."""
    if (status := await service.cancel(adaptation_id, tenant)) is None:
        raise _not_found(adaptation_id)
    return status
