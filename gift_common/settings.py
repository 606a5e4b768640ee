"""The settings of each process, read once from the environment (prefix ``GIFT_``).

Each process reads and checks only the settings it uses (``ApiSettings``, ``WorkerSettings``, ``ClientSettings``,
``HomeSettings``), so a malformed variable of one role never stops another: a client does not care about a bad
``GIFT_API_KEYS``. ``Settings`` is every one of them, the list that the docs and docker-compose are checked against.
``load`` turns a malformed variable into one line that names it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gift_common.adaptation_archive import ArchiveLimits
from gift_common.errors import UserError
from gift_common.schemas import CacheScope

REDIS_SCHEMES = ("redis", "rediss", "unix")
HTTP_SCHEMES = ("http", "https")


class _FromEnvironment(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GIFT_", extra="ignore")


class HomeSettings(_FromEnvironment):
    """Where a process keeps local caches and built models (the trainer's synthetic sets, a worker's models)."""

    home: Path = Field(default=Path.home() / ".cache" / "gift", description="local caches and built models")


class ClientSettings(_FromEnvironment):
    """What a client of the API reads (gift_common.client; the trainer)."""

    generator_url: str = "http://127.0.0.1:8000"
    api_key: str | None = None

    @field_validator("generator_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return checked_url(value, HTTP_SCHEMES)


class TelemetrySettings(_FromEnvironment):
    """How the API and the workers log and trace (services/generator/logs.py and tracing.py)."""

    log_format: Literal["text", "json"] = Field(
        default="text", description="text: one line for a person; json: one object a line with the ids of its job"
    )
    otlp_endpoint: str | None = Field(
        default=None,
        description="the OTLP/HTTP collector's base URL that traces go to (/v1/traces is added); "
        "unset: OTEL_EXPORTER_OTLP_ENDPOINT, else no tracing",
    )

    @field_validator("otlp_endpoint")
    @classmethod
    def _otlp_url(cls, value: str | None) -> str | None:
        return checked_url(value, HTTP_SCHEMES) if value else None


class QueueSettings(HomeSettings, TelemetrySettings):
    """The job queue and the image store, which the API and the workers share."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    chunk_size: int = Field(default=8, ge=1, description="images per stream entry")
    claim_timeout_seconds: float = Field(default=60.0, gt=0, description="idle time before work is taken over")
    max_deliveries: int = Field(default=5, ge=1, description="a chunk delivered this often fails its job")
    image_ttl_seconds: int = 7 * 24 * 3600
    job_ttl_seconds: int = 7 * 24 * 3600
    blob_store: str = Field(default="redis", description="where PNG bytes live: redis, file:///DIR, s3://BUCKET/PREFIX")
    s3_endpoint_url: str | None = Field(default=None, description="an S3-compatible store's URL; unset: AWS S3")
    blob_sweep_seconds: float = Field(default=3600.0, gt=0, description="how often a worker deletes expired bytes")
    blob_grace_seconds: float = Field(default=600.0, ge=0, description="bytes younger than this are never swept")
    worker_seen_seconds: float = Field(
        default=30.0, gt=0, description="a worker with a heartbeat this recent is alive; its presence outlives it"
    )

    max_adapter_rank: int = Field(default=128, ge=1, description="the largest LoRA rank an adapter may have")
    max_adaptation_images: int = Field(default=1000, ge=1, description="most images an adaptation archive may hold")
    max_adaptation_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1, description="the largest adaptation archive, uncompressed, POST accepts"
    )
    max_adaptation_pixels: int = Field(default=2048 * 2048, ge=1, description="most pixels of one archive image")

    def archive_limits(self) -> ArchiveLimits:
        """What an adaptation archive may hold: the API checks it at upload, the worker again when it reads it."""
        return ArchiveLimits(
            max_images=self.max_adaptation_images,
            max_bytes=self.max_adaptation_bytes,
            max_pixels=self.max_adaptation_pixels,
        )

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        return checked_url(value, REDIS_SCHEMES)

    def redis_location(self) -> str:
        """Where Redis is, for logs: without the user and password a URL may hold."""
        return without_credentials(self.redis_url)

    def blob_store_location(self) -> str:
        return without_credentials(self.blob_store)


class ApiSettings(QueueSettings):
    """The API process's settings."""

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
    max_adapter_bytes: int = Field(
        default=128 * 1024 * 1024, ge=1, description="the largest adapter file POST /v1/adapters accepts"
    )
    max_adaptation_steps: int = Field(default=10000, ge=1, description="most training steps one adaptation may ask")

    @field_validator("api_keys", "admin_keys", "webhook_secrets")
    @classmethod
    def _pairs_well_formed(cls, value: str | None) -> str | None:
        if value:
            parse_tenant_pairs(value)
        return value

    def tenants_by_key(self) -> dict[str, str]:
        """Map each bearer key to its tenant; empty when auth is off."""
        pairs = parse_tenant_pairs(self.api_keys) if self.api_keys else []
        return {key: tenant for tenant, key in pairs}

    def admins_by_key(self) -> dict[str, str]:
        """Map each admin key to its admin's name; empty when no admin is configured."""
        pairs = parse_tenant_pairs(self.admin_keys) if self.admin_keys else []
        return {key: name for name, key in pairs}

    def webhook_secret_of(self, tenant: str) -> str | None:
        """The secret that signs the tenant's webhooks; None when the tenant has none (then it may not ask for one)."""
        pairs = parse_tenant_pairs(self.webhook_secrets) if self.webhook_secrets else []
        return dict(pairs).get(tenant)


class WorkerSettings(QueueSettings):
    """A worker process's settings."""

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
    adapter_cache_count: int = Field(default=8, ge=1, description="most adapters a worker keeps loaded per model")
    adapter_cache_bytes: int = Field(
        default=1024 * 1024 * 1024, ge=1, description="most bytes of adapter files a worker keeps loaded, all models"
    )

    adaptations: Literal["idle", "never", "only"] = Field(
        default="idle",
        description="adaptation jobs: idle: taken when no image batch waits; never: images only; only: no images",
    )
    adaptation_checkpoint_steps: int = Field(
        default=50, ge=1, description="an adaptation's LoRA and optimizer are checkpointed every this many steps"
    )


class Settings(ApiSettings, WorkerSettings, ClientSettings):
    """Every setting of every process: the one list that docs/API.md and docker-compose.yml are checked against."""


def parse_tenant_pairs(value: str) -> list[tuple[str, str]]:
    """``tenant:value,...`` as (tenant, value) pairs. A malformed entry is named by its place, not quoted: its
    text may be a key or a secret, and the error is printed."""
    pairs = []
    for number, pair in enumerate(filter(None, (p.strip() for p in value.split(","))), start=1):
        tenant, sep, secret = pair.partition(":")
        if not sep or not tenant or not secret:
            raise ValueError(f"entry {number} is not of the form tenant:value")
        pairs.append((tenant, secret))
    return pairs


def checked_url(url: str, schemes: tuple[str, ...]) -> str:
    """``url`` when it starts with one of ``schemes``; the error names the schemes, not the URL (which may hold a
    password)."""
    if urlsplit(url).scheme not in schemes or "://" not in url:
        raise ValueError(f"must start with {' or '.join(f'{scheme}://' for scheme in schemes)}")
    return url


def without_credentials(url: str) -> str:
    """``url`` without the ``user:password@`` it may hold, for logs."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


S = TypeVar("S", bound=BaseSettings)


def load(cls: type[S], flags: Mapping[str, tuple[str, Any]] | None = None) -> S:
    """``cls`` read from the environment; a malformed variable is one UserError naming it, never its value.

    ``flags`` maps a setting to the command-line option that overrides its variable and the option's value: the
    value is checked by the same rule, and an error names the option.
    """
    flags = flags or {}
    try:
        return cls(**{name: value for name, (_, value) in flags.items()})
    except ValidationError as error:
        raise UserError("; ".join(_problem(issue, flags) for issue in error.errors())) from None


def _problem(issue: Mapping[str, Any], flags: Mapping[str, tuple[str, Any]]) -> str:
    name = str(issue["loc"][0]) if issue["loc"] else ""
    source = flags[name][0] if name in flags else f"GIFT_{name.upper()}"
    return f"{source}: {str(issue['msg']).removeprefix('Value error, ')}"
