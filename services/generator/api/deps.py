"""Dependencies the routes get injected: settings, the job service and the caller's tenant.

All are coroutines: a plain function would cost every request a hop through the thread pool.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gift_common.settings import ApiSettings
from services.generator.api.jobs import JobService

LOCAL_TENANT = "local"  # the single tenant when GIFT_API_KEYS is unset

_bearer = HTTPBearer(auto_error=False, description="a key from GIFT_API_KEYS")


async def get_settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings  # set by api/main.py's lifespan; app.state is untyped
    return settings


async def get_jobs(request: Request) -> JobService:
    jobs: JobService = request.app.state.jobs
    return jobs


async def get_tenant(
    settings: Annotated[ApiSettings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    tenants = settings.tenants_by_key()
    if not tenants:
        return LOCAL_TENANT
    sent = credentials.credentials if credentials else ""
    for key, tenant in tenants.items():
        if hmac.compare_digest(key.encode(), sent.encode()):
            return tenant
    raise HTTPException(
        status_code=401,
        detail="missing or invalid API key: send the header 'Authorization: Bearer <key>'",
        headers={"WWW-Authenticate": "Bearer"},
    )


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
JobsDep = Annotated[JobService, Depends(get_jobs)]
TenantDep = Annotated[str, Depends(get_tenant)]
