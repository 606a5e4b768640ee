"""``POST /v1/images/generations``: OpenAI's images API in front of the job queue, for tools that already speak it.

A request becomes one job (the queue, batching and cache of ``POST /v1/jobs``); the route waits for it at most
GIFT_IMAGES_WAIT_SECONDS and answers in OpenAI's shape. Its errors are OpenAI's too (``{"error": {...}}``, a 400
where this API says 422), since that is what OpenAI's clients read; an OpenAI field this service cannot honour is a
400 naming it, never silently ignored.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.fields import FieldInfo
from redis import exceptions as redis_errors
from starlette.exceptions import HTTPException

from gift_common.schemas import (
    AdapterId,
    AdapterScale,
    Integer,
    JobRequest,
    JobState,
    JobStatus,
    Number,
    Seed,
    Text,
    check_adapter_scale,
    check_seed_run,
)
from gift_common.settings import ApiSettings
from services.generator.api.deps import JobsDep, SettingsDep, TenantDep
from services.generator.api.errors import JobError
from services.generator.api.routes import ERRORS, IdempotencyKey, error_doc


def _as_in_jobs(name: str) -> FieldInfo:
    """The rules and default of a JobRequest field, so that both routes accept the same values."""
    return JobRequest.model_fields[name]


class ImageGenerationRequest(BaseModel):
    """OpenAI's request (``n`` up to 10, as there), plus this service's parameters of POST /v1/jobs (among them
    ``adapter`` and ``adapter_scale``, the extension fields that name a LoRA adapter)."""

    model_config = ConfigDict(extra="forbid")

    prompt: Text = Field(min_length=1)
    model: Text | None = Field(default=None, description="a name from GET /v1/models; unset: GIFT_DEFAULT_MODEL")
    n: Integer = Field(default=1, ge=1, le=10, description="images of the prompt, with seeds seed, seed + 1, ...")
    size: str | None = Field(default=None, description="'WxH' (multiples of 8, 8 to 2048), or 'auto': native")
    response_format: Literal["url", "b64_json"] = "url"
    quality: Literal["auto", "standard"] | None = Field(default=None, description="only the default quality")
    style: None = Field(default=None, description="not supported: any value is a 400")
    output_format: Literal["png"] | None = Field(default=None, description="only PNG")
    user: str | None = Field(default=None, description="an end-user id, a hint to OpenAI; accepted and ignored")
    seed: Annotated[Seed, _as_in_jobs("seed")]
    num_inference_steps: Annotated[Integer, _as_in_jobs("num_inference_steps")]
    guidance_scale: Annotated[Number, _as_in_jobs("guidance_scale")]
    negative_prompt: Annotated[Text | None, _as_in_jobs("negative_prompt")]
    adapter: Annotated[AdapterId | None, _as_in_jobs("adapter")]
    adapter_scale: Annotated[AdapterScale | None, _as_in_jobs("adapter_scale")]

    @field_validator("style", mode="before")
    @classmethod
    def _no_style(cls, style: Any) -> None:
        if style is not None:
            raise ValueError("this service has no styles; leave style out")
        return None

    @model_validator(mode="after")
    def _seeds_in_range(self) -> ImageGenerationRequest:
        check_seed_run(self.seed, self.n)
        check_adapter_scale(self.adapter, self.adapter_scale)
        return self

    @field_validator("size")
    @classmethod
    def _size_is_width_x_height(cls, size: str | None) -> str | None:
        if size is None or size == "auto":
            return size
        width, x, height = size.partition("x")
        if not (x and width.isdigit() and height.isdigit() and all(_side_ok(int(s)) for s in (width, height))):
            raise ValueError("expected 'WxH' with W and H multiples of 8 from 8 to 2048 (e.g. '512x512'), or 'auto'")
        return size

    def job(self) -> JobRequest:
        """The job that makes these images: ``n`` copies of the prompt, seeds ``seed + i``."""
        width, height = map(int, self.size.split("x")) if self.size and self.size != "auto" else (None, None)
        return JobRequest(
            prompts=[self.prompt] * self.n,
            model=self.model,
            seed=self.seed,
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            height=height,
            width=width,
            negative_prompt=self.negative_prompt,
            adapter=self.adapter,
            adapter_scale=self.adapter_scale,
        )


def _side_ok(pixels: int) -> bool:
    return 8 <= pixels <= 2048 and pixels % 8 == 0


class GeneratedImage(BaseModel):
    b64_json: str | None = Field(default=None, description="the PNG, base64 (response_format b64_json)")
    url: str | None = Field(default=None, description="GET /v1/images/{sha256} of the PNG (response_format url)")
    revised_prompt: str | None = Field(default=None, description="never set: prompts are used as given")


class ImagesResponse(BaseModel):
    created: int = Field(description="unix seconds when the images were ready")
    data: list[GeneratedImage]


class OpenAIError(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorBody(BaseModel):
    """OpenAI's error shape, which its clients parse."""

    error: OpenAIError


# This API's status -> OpenAI's error type and code for it.
_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    409: ("invalid_request_error", "conflict"),
    410: ("invalid_request_error", "image_evicted"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    500: ("server_error", "generation_failed"),
    503: ("server_error", "service_unavailable"),
    504: ("server_error", "timeout"),
}
NO_RETRY = {"x-should-retry": "false"}  # OpenAI's clients do not retry an answer with this header
# The fields of a job's limit errors (API.md: "field first") as this route calls them.
_PARAMS = {"prompts": "prompt", "height": "size", "width": "size"}


def _in_route_terms(detail: str) -> tuple[str, str | None]:
    """A "field first" detail of POST /v1/jobs as this route says it (``prompts.0: ...`` is ``prompt: ...``), and
    the field it names first; None for a detail that names none (a full queue, a tenant's limit)."""
    head, sep, rest = detail.partition(": ")
    fields = head.split(", ")
    if not sep or any(" " in field for field in fields):
        return detail, None
    named = list(dict.fromkeys(_PARAMS.get(field.partition(".")[0], field) for field in fields))
    return f"{', '.join(named)}: {rest}", named[0]


def _invalid(error: RequestValidationError, request: Request) -> tuple[str, str | None]:
    """The message and the field of a body the schema refuses: its first problem, in this route's words."""
    issue = error.errors()[0]
    fields = [str(part) for part in issue["loc"][1:]]
    message = str(issue["msg"]).removeprefix("Value error, ")
    if issue["type"] == "json_invalid":
        return f"the body is not valid JSON: {issue.get('ctx', {}).get('error', message)}", None
    if not fields:
        if "application/json" not in request.headers.get("content-type", ""):
            return "the body must be a JSON object sent with the header 'Content-Type: application/json'", None
        message, param = _in_route_terms(message)  # a rule across fields names its field first, as "seed: ..."
        return (message if param else f"the body: {message}"), param
    return f"{'.'.join(fields)}: {message}", fields[0]


def _error_response(status: int, message: str, param: str | None, headers: Mapping[str, str] | None) -> JSONResponse:
    status = 400 if status == 422 else status
    kind, code = _KINDS.get(status, ("invalid_request_error", None))
    body = OpenAIErrorBody(error=OpenAIError(message=message, type=kind, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


class OpenAIErrorRoute(APIRoute):
    """Turns every error of the route into OpenAI's shape (the app's handlers keep {"detail"} for the others)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as error:
                return _error_response(400, *_invalid(error, request), None)
            except JobError as error:
                return _error_response(error.status_code, *_in_route_terms(error.detail), error.headers)
            except HTTPException as error:  # the framework's base class: a body it cannot parse raises that one
                return _error_response(error.status_code, str(error.detail), None, error.headers)
            except (redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.OutOfMemoryError):
                retry_after = {"Retry-After": str(request.app.state.settings.retry_after_seconds)}
                return _error_response(
                    503, "the job queue (Redis) is unavailable or full; retry later", None, retry_after
                )

        return handle


def _openai_error(description: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return error_doc(description, OpenAIErrorBody, headers)


images = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIErrorRoute)


@images.post(
    "/images/generations",
    response_model=ImagesResponse,
    response_model_exclude_none=True,
    responses={
        400: _openai_error("a field breaks a rule, is one this service cannot honour, or exceeds a server limit"),
        401: _openai_error("GIFT_API_KEYS is set and the request lacks a valid key", {"WWW-Authenticate": "Bearer"}),
        409: _openai_error("the job was cancelled meanwhile, or its idempotency key's job just expired"),
        410: _openai_error("an image was evicted before it could be read; send the request again"),
        413: ERRORS[413],
        429: _openai_error("the tenant has too many unfinished jobs", {"Retry-After": "seconds to wait"}),
        500: _openai_error("the job failed (a pipeline call raised)"),
        503: _openai_error("Redis is unreachable or full", {"Retry-After": "seconds to wait"}),
        504: _openai_error("the job did not finish within GIFT_IMAGES_WAIT_SECONDS; it goes on"),
        "default": _openai_error("every error but a 413 is in OpenAI's shape (and none is a 422)"),
    },
)
async def generate_images(
    body: ImageGenerationRequest,
    request: Request,
    jobs: JobsDep,
    tenant: TenantDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> ImagesResponse:
    request_key = idempotency_key or implicit_key(body.job())
    job = await jobs.submit(body.job(), tenant, request_key)
    if idempotency_key is None and job.status in (JobState.failed, JobState.cancelled):
        await jobs.release_key(tenant, request_key, job.id)  # the same request once failed: this one tries anew
        job = await jobs.submit(body.job(), tenant, request_key)
    try:
        return await _answer(job, body, request, jobs, tenant, settings)
    except JobError as error:
        if error.status_code == 410 and idempotency_key is None:
            await jobs.release_key(tenant, request_key, job.id)  # its bytes are gone: sent again, it makes them anew
        raise


def implicit_key(job: JobRequest) -> str:
    """The Idempotency-Key of a request sent without one: its job's content. OpenAI's clients retry a 504 or a
    lost answer without a key; with this, a retry joins the job the first attempt made. The same request sent
    again later joins it too, which is the same answer: its images depend only on the request."""
    return "openai-request:" + hashlib.sha256(job.model_dump_json().encode()).hexdigest()


async def _answer(
    job: JobStatus, body: ImageGenerationRequest, request: Request, jobs: JobsDep, tenant: str, settings: ApiSettings
) -> ImagesResponse:
    done = await jobs.wait(job.id, tenant, settings.images_wait_seconds)
    if done is None or not done.status.terminal:
        raise JobError(
            504,
            f"job {job.id} did not finish within {settings.images_wait_seconds:g} s (GIFT_IMAGES_WAIT_SECONDS); it "
            f"goes on: GET /v1/jobs/{job.id}; this request sent again without an Idempotency-Key waits for it",
        )
    if done.status is JobState.failed:  # OpenAI's clients retry a 500 and a 409 unless told not to
        raise JobError(500, f"job {job.id} failed: {done.error}", headers=NO_RETRY)
    if done.status is JobState.cancelled:
        raise JobError(409, f"job {job.id} was cancelled before it finished", headers=NO_RETRY)
    data = [await _image(done, index, body.response_format, request, jobs, tenant) for index in range(done.total)]
    return ImagesResponse(created=int(time.time()), data=data)


async def _image(
    job: JobStatus, index: int, response_format: str, request: Request, jobs: JobsDep, tenant: str
) -> GeneratedImage:
    sha256 = job.images[index].sha256
    if response_format == "url":
        return GeneratedImage(url=str(request.url_for("get_image", sha256=sha256)))
    blob = await jobs.image(sha256, tenant)
    if blob is None:
        raise JobError(410, f"image {index} ({sha256}) of job {job.id} was evicted before it was read; send again")
    return GeneratedImage(b64_json=base64.b64encode(blob).decode())
