"""The adapter routes of API.md: upload, list, read and delete LoRA adapters. Thin: the service checks and keeps."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response

from gift_common.schemas import AdapterId, AdapterInfo, Text
from services.generator.api.deps import AdaptersDep, SettingsDep, TenantDep
from services.generator.api.routes import V1_ERRORS, ConcreteFirstRoute, _errors, error_doc

adapters = APIRouter(prefix="/v1", tags=["adapters"], route_class=ConcreteFirstRoute)
PathAdapterId = Annotated[AdapterId, Path(description="the id POST /v1/adapters returned: the file's SHA-256")]
NOT_FOUND = error_doc("no such adapter (never uploaded, deleted, or another tenant's own)")
FILE = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


def _not_found(adapter_id: str) -> HTTPException:
    return HTTPException(404, f"adapter {adapter_id} not found (never uploaded, deleted, or another tenant's own)")


@adapters.post(
    "/adapters",
    status_code=201,
    response_model=AdapterInfo,
    openapi_extra={"requestBody": {"required": True, "content": FILE}},
    responses={
        200: {"model": AdapterInfo, "description": "the same file was uploaded before into the same scope"},
        409: error_doc("the same file is already uploaded for another model"),
        **_errors(*V1_ERRORS),
        413: error_doc("the file is larger than GIFT_MAX_ADAPTER_BYTES"),
    },
)
async def upload_adapter(
    request: Request,
    response: Response,
    service: AdaptersDep,
    tenant: TenantDep,
    settings: SettingsDep,
    model: Annotated[Text | None, Query(description="the base model; unset: GIFT_DEFAULT_MODEL")] = None,
    shared: Annotated[bool, Query(description="true: every tenant may use it")] = False,
    name: Annotated[Text | None, Query(max_length=200, description="a label for listings")] = None,
) -> AdapterInfo:
    info, created = await service.upload(
        await request.body(), model or settings.default_model, tenant, shared=shared, name=name
    )
    response.status_code = 201 if created else 200
    response.headers["Location"] = f"/v1/adapters/{info.id}"
    return info


@adapters.get("/adapters", response_model=list[AdapterInfo], responses=_errors(401, 503))
async def list_adapters(service: AdaptersDep, tenant: TenantDep) -> list[AdapterInfo]:
    return await service.listing(tenant)


@adapters.get("/adapters/{adapter_id}", response_model=AdapterInfo, responses={**_errors(*V1_ERRORS), 404: NOT_FOUND})
async def get_adapter(adapter_id: PathAdapterId, service: AdaptersDep, tenant: TenantDep) -> AdapterInfo:
    if (info := await service.find(adapter_id, tenant)) is None:
        raise _not_found(adapter_id)
    return info


@adapters.delete(
    "/adapters/{adapter_id}",
    response_model=AdapterInfo,
    responses={
        **_errors(*V1_ERRORS),
        403: error_doc("a shared adapter another tenant uploaded"),
        404: NOT_FOUND,
    },
)
async def delete_adapter(adapter_id: PathAdapterId, service: AdaptersDep, tenant: TenantDep) -> AdapterInfo:
    """Queued jobs that name the adapter fail, saying so, when a worker reaches them."""
    if (info := await service.delete(adapter_id, tenant)) is None:
        raise _not_found(adapter_id)
    return info
