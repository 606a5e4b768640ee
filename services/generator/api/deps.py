"""Dependencies the routes get injected: settings, the job and adapter services and the caller's tenant.

All are coroutines: a plain function would cost every request a hop through the thread pool.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gift_common.settings import ApiSettings
from services.generator import logs, tracing
from services.generator.api.adaptations import AdaptationService
from services.generator.api.adapters import AdapterService
from services.generator.api.jobs import JobService

LOCAL_TENANT = "local"  # the single tenant when GIFT_API_KEYS is unset

_bearer = HTTPBearer(auto_error=False, description="a key from GIFT_API_KEYS (or GIFT_ADMIN_KEYS)")


async def get_settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings  # set by api/main.py's lifespan; app.state is untyped
    return settings


async def get_jobs(request: Request) -> JobService:
    jobs: JobService = request.app.state.jobs
    return jobs


def _holder(names_by_key: dict[str, str], credentials: HTTPAuthorizationCredentials | None) -> str | None:
    """The name ``credentials`` is the key of, compared in constant time; None for none."""
    sent = credentials.credentials if credentials else ""
    for key, name in names_by_key.items():
        if hmac.compare_digest(key.encode(), sent.encode()):
            return name
    return None


def _unauthorized(detail: str = "missing or invalid API key") -> HTTPException:
    return HTTPException(
        status_code=401,
        detail=f"{detail}: send the header 'Authorization: Bearer <key>'",
        headers={"WWW-Authenticate": "Bearer"},
    )


async def get_tenant(
    settings: Annotated[ApiSettings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    tenants = settings.tenants_by_key()
    tenant = _holder(tenants, credentials) if tenants else LOCAL_TENANT
    if tenant is None:
        raise _unauthorized()
    logs.add(tenant=tenant)  # the request's log lines and span say whose it is from here on
    tracing.annotate(tenant=tenant)
    return tenant


async def get_admin(
    settings: Annotated[ApiSettings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The admin's name (GIFT_ADMIN_KEYS); a tenant's key is not an admin's."""
    if (admin := _holder(settings.admins_by_key(), credentials)) is None:
        raise _unauthorized("missing or invalid admin key (GIFT_ADMIN_KEYS)")
    return admin


@dataclass(frozen=True)
class Viewer:
    """Who reads a listing of the fleet: a tenant (sees its own jobs) or an admin (``tenant`` None: sees all)."""

    tenant: str | None


async def get_viewer(
    settings: Annotated[ApiSettings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Viewer:
    if _holder(settings.admins_by_key(), credentials) is not None:
        return Viewer(None)
    return Viewer(await get_tenant(settings, credentials))


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
JobsDep = Annotated[JobService, Depends(get_jobs)]
TenantDep = Annotated[str, Depends(get_tenant)]
AdminDep = Annotated[str, Depends(get_admin)]
ViewerDep = Annotated[Viewer, Depends(get_viewer)]


async def get_adapters(request: Request) -> AdapterService:
    adapters: AdapterService = request.app.state.jobs.adapters
    return adapters


AdaptersDep = Annotated[AdapterService, Depends(get_adapters)]


async def get_adaptations(request: Request) -> AdaptationService:
    adaptations: AdaptationService = request.app.state.jobs.adaptations
    return adaptations


AdaptationsDep = Annotated[AdaptationService, Depends(get_adaptations)]
