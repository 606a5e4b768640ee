"""Every setting of every process, read once from the environment (prefix ``GIFT_``).

One class so that the API, the worker, the client and docker-compose agree on names: the compose test
checks that every variable the compose file sets is a field here.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gift_common.schemas import CacheScope


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GIFT_", extra="ignore")

    # --- shared ---------------------------------------------------------------------------------
    redis_url: str = "redis://127.0.0.1:6379/0"
    home: Path = Field(default=Path.home() / ".cache" / "gift", description="local caches and built models")

    # --- API --------------------------------------------------------------------------------------
    api_keys: str | None = Field(default=None, description="comma-separated tenant:key pairs; unset = no auth")
    admin_keys: str | None = Field(
        default=None, description="comma-separated name:key pairs that list and cancel every tenant's jobs"
    )
    default_model: str = "tinyworld"
    max_prompts_per_job: int = 4096
    max_prompt_chars: int = 1000
    max_queued_jobs_per_tenant: int = 64
    max_body_bytes: int = 2 * 1024 * 1024
    cache_scope: CacheScope = Field(
        default=CacheScope.deployment, description="who shares cached images when a job does not say"
    )
    max_image_cost: int = Field(
        default=512 * 512 * 100, ge=1, description="most height x width x num_inference_steps of one image"
    )
    worker_seen_seconds: float = 30.0
    images_wait_seconds: float = Field(
        default=300.0, gt=0, description="how long POST /v1/images/generations waits for its job"
    )
    retry_after_seconds: int = 2
    redis_admit_fraction: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="new jobs are refused once Redis's used_memory reaches this share of its maxmemory; 1: never",
    )
    webhook_secrets: str | None = Field(
        default=None, description="comma-separated tenant:secret pairs that sign webhooks; unlisted tenants get none"
    )
    webhook_attempts: int = Field(default=5, ge=1, le=20, description="most POSTs of one webhook")
    webhook_backoff_seconds: float = Field(default=2.0, gt=0, description="wait before the 2nd POST; doubles after")
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, description="longest wait for a webhook's answer")
    events_keepalive_seconds: float = Field(
        default=15.0, gt=0, description="longest silence of an event stream before a comment line keeps it open"
    )

    # --- queue and storage ------------------------------------------------------------------------
    chunk_size: int = Field(default=8, ge=1, description="images per stream entry")
    claim_timeout_seconds: float = Field(default=60.0, gt=0, description="idle time before work is taken over")
    max_deliveries: int = Field(default=5, ge=1, description="a chunk delivered this often fails its job")
    image_ttl_seconds: int = 7 * 24 * 3600
    job_ttl_seconds: int = 7 * 24 * 3600
    blob_store: str = Field(default="redis", description="where PNG bytes live: redis, file:///DIR, s3://BUCKET/PREFIX")
    s3_endpoint_url: str | None = Field(default=None, description="an S3-compatible store's URL; unset: AWS S3")
    blob_sweep_seconds: float = Field(default=3600.0, gt=0, description="how often a worker deletes expired bytes")
    blob_grace_seconds: float = Field(default=600.0, ge=0, description="bytes younger than this are never swept")

    # --- worker -----------------------------------------------------------------------------------
    models: str | None = Field(default=None, description="NAME=DIR,... served when --model is not given")
    batch_size: int = Field(default=16, ge=1)
    heartbeat_seconds: float = Field(default=2.0, gt=0)
    poll_seconds: float = Field(default=0.02, gt=0)
    device: str = "auto"
    torch_threads: int = Field(default=0, ge=0, description="CPU threads for torch; 0 keeps torch's default")
    scheduler: Literal["dpmsolver++", "directory"] = Field(
        default="dpmsolver++", description="DPM-Solver++ (2M) on each model's noise schedule, or its own scheduler"
    )
    compile_unet: bool = Field(default=False, description="torch.compile each UNet, warmed up at load")

    # --- client -----------------------------------------------------------------------------------
    generator_url: str = "http://127.0.0.1:8000"
    api_key: str | None = None

    @field_validator("api_keys", "admin_keys", "webhook_secrets")
    @classmethod
    def _pairs_well_formed(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value:
            parse_tenant_pairs(value, f"GIFT_{(info.field_name or '').upper()}")
        return value

    def tenants_by_key(self) -> dict[str, str]:
        """Map each bearer key to its tenant; empty when auth is off."""
        pairs = parse_tenant_pairs(self.api_keys, "GIFT_API_KEYS") if self.api_keys else []
        return {key: tenant for tenant, key in pairs}

    def admins_by_key(self) -> dict[str, str]:
        """Map each admin key to its admin's name; empty when no admin is configured."""
        pairs = parse_tenant_pairs(self.admin_keys, "GIFT_ADMIN_KEYS") if self.admin_keys else []
        return {key: name for name, key in pairs}

    def webhook_secret_of(self, tenant: str) -> str | None:
        """The secret that signs the tenant's webhooks; None when the tenant has none (then it may not ask for one)."""
        pairs = parse_tenant_pairs(self.webhook_secrets, "GIFT_WEBHOOK_SECRETS") if self.webhook_secrets else []
        return dict(pairs).get(tenant)


def parse_tenant_pairs(value: str, variable: str) -> list[tuple[str, str]]:
    """``tenant:value,...`` as (tenant, value) pairs; a malformed entry is an error naming the variable."""
    pairs = []
    for pair in filter(None, (p.strip() for p in value.split(","))):
        tenant, sep, secret = pair.partition(":")
        if not sep or not tenant or not secret:
            raise ValueError(f"{variable} entry {pair!r} is not of the form tenant:value")
        pairs.append((tenant, secret))
    return pairs


@lru_cache
def get_settings() -> Settings:
    return Settings()
