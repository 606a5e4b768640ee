"""The pydantic models of the public contract (API.md), shared by the API and its clients."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator


def _utf8(text: str) -> str:
    """JSON can carry lone surrogates (``"\\ud800"``); they cannot be hashed, stored or shown, so refuse them here."""
    try:
        text.encode()
    except UnicodeEncodeError as error:
        raise ValueError(f"not valid Unicode text: a lone surrogate at character {error.start}") from None
    return text


# A webhook's URL: http or https, an ASCII host (a name or IPv4 address), an optional port up to 65535, then
# anything without spaces or ASCII control characters; the same text in the JSON schema and the validator (written
# without \s, \d or \w, which JSON Schema's regular expressions read otherwise than Python's), so that every URL the
# schema allows is one the API accepts and the webhook's HTTP client can POST to.
_URL_CHARS = r"A-Za-z0-9._~%!$&'()*+,;="
_PORT = r"[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]"
_HTTP_URL = rf"https?://([{_URL_CHARS}:-]+@)?[{_URL_CHARS}-]+(:({_PORT}))?([/?#][^\x00-\x20\x7f]*)?"


def _http_url(url: str) -> str:
    """A webhook goes to a URL its client can POST to; anything else would fail only when the job ends."""
    if not re.fullmatch(_HTTP_URL, url):
        raise ValueError(
            "must be an http:// or https:// URL with an ASCII host name or IPv4 address, a port up to 65535 if any, "
            "and no spaces or control characters"
        )
    return url


def _not_bool(value: Any) -> Any:
    """Lax mode reads ``true`` as 1; a boolean in a number field is a client's mistake, so refuse it."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    return value


Text = Annotated[str, AfterValidator(_utf8)]
HttpUrl = Annotated[
    Text, AfterValidator(_http_url), Field(max_length=2048, json_schema_extra={"pattern": f"^{_HTTP_URL}$"})
]
Integer = Annotated[int, BeforeValidator(_not_bool)]
Number = Annotated[float, BeforeValidator(_not_bool)]
MAX_SEED = 2**63 - 1
Seed = Annotated[Integer, Field(ge=0, le=MAX_SEED)]
# A prompt must hold a character that str.strip() keeps; the pattern says so in the JSON schema (JSON Schema's \s
# lacks \x1c-\x1f and \x85, which strip() removes), the validator below says it with the prompt's index.
Prompt = Annotated[Text, Field(json_schema_extra={"pattern": r"[^\s\x1c-\x1f\x85]"})]
AdapterId = Annotated[
    str, Field(pattern=r"^[0-9a-f]{64}$", description="an adapter's id: the lower-case hex SHA-256 of its file")
]
AdapterScale = Annotated[Number, Field(ge=-4, le=4, allow_inf_nan=False)]


class JobState(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.succeeded, JobState.failed, JobState.cancelled)


class CacheScope(StrEnum):
    """Who shares a job's cached images: every tenant of the deployment, or only the tenant that asked."""

    deployment = "deployment"
    tenant = "tenant"


def check_seed_run(seed: int, count: int) -> None:
    """Images use ``seed``, ``seed + 1``, ...: each must be a seed this API accepts, so that any reported seed can be
    sent back."""
    if seed + count - 1 > MAX_SEED:
        raise ValueError(
            f"seed: images use seed + i, so with {count} images seed may be at most {MAX_SEED - count + 1} "
            f"(2^63 - {count}), not {seed}"
        )


def check_adapter_scale(adapter: str | None, scale: float | None) -> None:
    """A scale without an adapter would be silently ignored: refuse it instead."""
    if scale is not None and adapter is None:
        raise ValueError("adapter_scale: a scale needs an adapter; name one or leave adapter_scale out")


class Scheduler(StrEnum):
    """The sampler of a job's images: the one the model's directory names (Stable Diffusion v1.5: PNDM), or
    DPM-Solver++ (2M) on the same noise schedule, which needs fewer steps."""

    directory = "directory"
    dpmsolver = "dpmsolver++"


class JobRequest(BaseModel):
    """A batch of prompts to synthesise. Server-side limits (prompt count, length) are checked by the API."""

    model_config = ConfigDict(extra="forbid")

    prompts: list[Prompt] = Field(min_length=1)
    model: Text | None = None
    seed: Seed = 0
    seeds: list[Seed] | None = None
    num_inference_steps: Integer = Field(default=25, ge=1, le=200)
    guidance_scale: Number = Field(default=7.5, ge=0, le=30, allow_inf_nan=False)
    scheduler: Scheduler | None = Field(default=None, description="the sampler; none = the worker's GIFT_SCHEDULER")
    height: Integer | None = Field(default=None, ge=8, le=2048, multiple_of=8)
    width: Integer | None = Field(default=None, ge=8, le=2048, multiple_of=8)
    negative_prompt: Text | None = None
    cache_scope: CacheScope | None = None
    priority: Integer | None = Field(
        default=None, ge=-10, le=10, description="within its tenant, higher goes first; none is 0"
    )
    callback_url: HttpUrl | None = Field(
        default=None, description="POSTed the final status, signed, when the job ends (API.md, Webhooks)"
    )
    adapter: AdapterId | None = Field(
        default=None, description="a LoRA adapter of the model (POST /v1/adapters) applied to every image"
    )
    adapter_scale: AdapterScale | None = Field(
        default=None, description="the adapter's weight, -4 to 4; none is 1 (only with an adapter)"
    )

    @field_validator("prompts")
    @classmethod
    def _prompts_non_empty(cls, prompts: list[str]) -> list[str]:
        for i, prompt in enumerate(prompts):
            if not prompt.strip():
                raise ValueError(f"prompt {i} is empty")
        return prompts

    @model_validator(mode="after")
    def _seeds_match_prompts(self) -> JobRequest:
        if self.seeds is not None and len(self.seeds) != len(self.prompts):
            raise ValueError(
                f"seeds has {len(self.seeds)} entries but prompts has {len(self.prompts)}; they must match"
            )
        if self.seeds is None:
            check_seed_run(self.seed, len(self.prompts))
        check_adapter_scale(self.adapter, self.adapter_scale)
        return self

    @property
    def scale(self) -> float:
        """The adapter's weight as applied: 1 unless the request says otherwise."""
        return 1.0 if self.adapter_scale is None else self.adapter_scale

    def seed_of(self, index: int) -> int:
        """Image ``index``'s seed: always one this API accepts back (0 to MAX_SEED)."""
        return self.seeds[index] if self.seeds is not None else self.seed + index

    def cache_owner(self, tenant: str) -> str | None:
        """The tenant whose private cache serves and keeps this job's images; None for the shared cache."""
        return tenant if self.cache_scope == CacheScope.tenant else None


class ImageInfo(BaseModel):
    index: int
    prompt: str
    seed: int
    sha256: str
    url: str


class JobStatus(BaseModel):
    id: str
    status: JobState
    total: int
    done: int
    cached: int
    error: str | None = None
    created_at: datetime
    finished_at: datetime | None = None
    num_inference_steps: int | None = Field(
        default=None, description="the job's denoising steps; null for jobs submitted before this field existed"
    )
    replaced: int = Field(
        default=0,
        description="images the model's safety checker blacked out, drawn again from derived seeds (API.md)",
    )
    images: list[ImageInfo] = []


class JobSummary(JobStatus):
    """A job in a listing: its status without the images (GET /v1/jobs/{id} has them), its tenant and model."""

    tenant: str
    model: str


class JobPage(BaseModel):
    """One page of a listing, newest first; ``next_cursor`` asks for the next page, null after the last."""

    jobs: list[JobSummary]
    next_cursor: str | None = None


class WorkerInfo(BaseModel):
    """A live worker (a heartbeat within GIFT_WORKER_SEEN_SECONDS)."""

    id: str
    models: list[str]
    device: str
    batch_size: int
    heartbeat_age_seconds: float
    chunks_held: int = Field(description="chunks of work it holds now, every tenant's")
    images_done: int = Field(description="images it recorded since it started")
    jobs: list[str] = Field(description="the jobs it holds work of: the caller's own (every one for an admin)")


class ModelInfo(BaseModel):
    name: str
    height: int
    width: int
    default: bool = False
    stand_in: bool = False  # random weights (a rehearsal's stand-in): its images are not results
    max_image_cost: int | None = Field(
        default=None, description="the most height x width x num_inference_steps this server accepts for one image"
    )


class AdapterInfo(BaseModel):
    """An uploaded LoRA adapter (POST /v1/adapters): what was checked of it at upload."""

    id: str = Field(description="the SHA-256 of the file: the same file always has the same id")
    model: str = Field(description="the base model it was checked against and may be used with")
    name: str | None = Field(default=None, description="the uploader's label, if any")
    rank: int = Field(description="the largest LoRA rank among its layers")
    layers: int = Field(description="how many of the model's layers it adapts")
    bytes: int
    shared: bool = Field(description="true: every tenant may use it; false: only the tenant that uploaded it")
    created_at: datetime


class AdaptationStatus(BaseModel):
    """An adaptation job (POST /v1/adaptations): a LoRA of ``model`` trained on an uploaded archive by a worker."""

    id: str
    model: str
    status: JobState
    step: int = Field(description="training steps done (the last checkpoint's after a resume)")
    steps: int = Field(description="training steps asked for")
    adapter: str | None = Field(
        default=None, description="the resulting adapter's id (the SHA-256 of its file), set when succeeded"
    )
    error: str | None = None
    created: float = Field(description="when it was submitted (unix seconds)")
    finished: float | None = Field(default=None, description="when it ended (unix seconds), null until then")


class ErrorBody(BaseModel):
    """Every error but a schema 422: one line, the field first where a field is at fault."""

    detail: str


class SchemaIssue(BaseModel):
    loc: list[str | int] = Field(description="where: 'body', 'query' or 'path', then the field and list index")
    msg: str
    type: str


class InvalidRequestBody(BaseModel):
    """A 422: a list of schema issues, or one line (field first) for a server limit such as an unknown model."""

    detail: list[SchemaIssue] | str
