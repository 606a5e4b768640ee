"""The HTTP client of the generator service (API.md), sync and async, for the trainer and any other Python tool.

Both clients run the same operations: each is written once, in ``_Protocol``, as a generator that yields the
steps it needs (``_Send`` an HTTP request, ``_Sleep`` before a retry) and receives their results. A client only
carries steps out, with ``httpx.Client`` and ``time.sleep`` or ``httpx.AsyncClient`` and ``asyncio.sleep``, so
request building, answer checking and the retry policy cannot drift apart between the two.

Retries: 502, 503, 504 and connection errors or timeouts are retried with exponential backoff, honouring
``Retry-After``. A ``POST /v1/jobs`` is retried too, safely: each ``submit`` sends a fresh ``Idempotency-Key`` and
the same one on its retries, so a retry whose first attempt reached the server answers with the job that attempt
created instead of creating a second one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Self, TypeAlias, TypeVar, cast
from urllib.parse import urlsplit

import httpx
from pydantic import TypeAdapter, ValidationError
from tqdm import tqdm

from gift_common.errors import UserError
from gift_common.schemas import (
    AdaptationStatus,
    AdapterInfo,
    ImageInfo,
    JobPage,
    JobRequest,
    JobState,
    JobStatus,
    ModelInfo,
    WorkerInfo,
)
from gift_common.settings import HTTP_SCHEMES, ClientSettings, checked_url, load

RETRY_STATUSES = frozenset({502, 503, 504})
MAX_RETRY_DELAY = 30.0  # seconds; also caps a server's Retry-After so that a client never stalls for long
ADAPTATION_POLL_SECONDS = 1.0  # how often wait_adaptation reads an adaptation's status
LONG_POLL_SECONDS = 30.0  # the longest the server holds a status poll (API.md: `wait`, 0 to 30): one request a 30 s

T = TypeVar("T")


# --- errors -----------------------------------------------------------------------------------------------------


class GeneratorError(Exception):
    """Base of every error this client raises, so callers can catch the generator's failures in one clause."""


class GeneratorUnavailable(GeneratorError):
    """The generator could not be reached, or kept answering 502/503/504, through every retry."""

    def __init__(self, url: str, cause: str, attempts: int) -> None:
        super().__init__(url, cause, attempts)
        self.url, self.cause, self.attempts = url, cause, attempts

    def __str__(self) -> str:
        return f"generator unavailable at {self.url} after {self.attempts} attempts; last cause: {self.cause}"


class GeneratorHTTPError(GeneratorError):
    """The generator refused a request (4xx) or failed on it (5xx); ``detail`` is the body's ``detail``."""

    def __init__(self, status_code: int, detail: Any, method: str, url: str) -> None:
        super().__init__(status_code, detail, method, url)
        self.status_code, self.detail, self.method, self.url = status_code, detail, method, url

    def __str__(self) -> str:
        return f"{self.method} {urlsplit(self.url).path} -> {self.status_code}: {format_detail(self.detail)}"


class IntegrityError(GeneratorError):
    """Downloaded image bytes do not hash to the name they were asked by: never train on them."""

    def __init__(self, sha256: str, actual: str) -> None:
        super().__init__(sha256, actual)
        self.sha256, self.actual = sha256, actual

    def __str__(self) -> str:
        return f"image {self.sha256} arrived with SHA-256 {self.actual}; the bytes are corrupt"


class JobFailed(GeneratorError):
    """The job ended ``failed``; ``job.error`` says why."""

    def __init__(self, job: JobStatus) -> None:
        super().__init__(job)
        self.job = job

    def __str__(self) -> str:
        return f"job {self.job.id} failed after {self.job.done}/{self.job.total} images: {self.job.error}"


class JobCancelled(GeneratorError):
    """The job was cancelled (by this or another client) before it finished."""

    def __init__(self, job: JobStatus) -> None:
        super().__init__(job)
        self.job = job

    def __str__(self) -> str:
        return f"job {self.job.id} was cancelled after {self.job.done}/{self.job.total} images"


class AdaptationFailed(GeneratorError):
    """The adaptation job ended ``failed`` or ``cancelled``; ``adaptation.error`` says why it failed."""

    def __init__(self, adaptation: AdaptationStatus) -> None:
        super().__init__(adaptation)
        self.adaptation = adaptation

    def __str__(self) -> str:
        a = self.adaptation
        return f"adaptation {a.id} {a.status} at step {a.step}/{a.steps}" + (f": {a.error}" if a.error else "")


class JobTimeout(GeneratorError, TimeoutError):
    """``wait`` gave up; the job goes on running on the server (cancel it if it is no longer wanted)."""

    def __init__(self, job: JobStatus, timeout: float) -> None:
        super().__init__(job, timeout)
        self.job, self.timeout = job, timeout

    def __str__(self) -> str:
        return (
            f"job {self.job.id} still {self.job.status} after {self.timeout:g} s "
            f"({self.job.done}/{self.job.total} images)"
        )


def format_detail(detail: Any) -> str:
    """One line from an error body's ``detail``: FastAPI's validation list becomes ``loc.path: msg; ...``."""
    if isinstance(detail, list):
        text = "; ".join(_format_detail_item(item) for item in detail)
    else:
        text = detail if isinstance(detail, str) else json.dumps(detail)
    return " ".join(text.split())


def _format_detail_item(item: Any) -> str:
    if not (isinstance(item, dict) and "msg" in item):
        return str(item)
    loc = ".".join(str(part) for part in item.get("loc", ()))
    msg = str(item["msg"]).removeprefix("Value error, ")  # pydantic's wrapping of a validator's ValueError
    return f"{loc}: {msg}" if loc else msg


# --- the shared, I/O-free part ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Send:
    """An HTTP request for a client to send; the client sends back the response or throws the TransportError in."""

    method: str
    url: str
    timeout: float
    params: dict[str, Any] | None = None
    json: Any = None
    stream: bool = False  # a 2xx answer comes back with its body unread, for the caller to stream and close
    headers: dict[str, str] | None = None
    content: bytes | None = None  # a raw body (an adapter's file), sent instead of ``json``


@dataclass(frozen=True)
class _Sleep:
    seconds: float


_Op: TypeAlias = Generator[_Send | _Sleep, Any, T]


@dataclass(frozen=True)
class AdaptOptions:
    """The training parameters of POST /v1/adaptations (API.md, Adaptations)."""

    steps: int = 200
    rank: int = 4
    learning_rate: float = 1e-4
    seed: int = 0
    name: str | None = None
    shared: bool = False

    def params(self) -> dict[str, Any]:
        return {"steps": self.steps, "rank": self.rank, "learning_rate": self.learning_rate, "seed": self.seed,
                "name": self.name, "shared": str(self.shared).lower()}  # fmt: skip


@dataclass(frozen=True)
class JobQuery:
    """Which page of which listing: the caller's jobs, or with ``admin`` (an admin's key) every tenant's or
    ``tenant``'s; ``status`` filters by state; ``cursor`` is the ``next_cursor`` of the page before."""

    status: JobState | None = None
    limit: int = 50
    cursor: str | None = None
    admin: bool = False
    tenant: str | None = None

    def params(self) -> dict[str, Any]:
        given = {"status": self.status and self.status.value, "limit": self.limit, "cursor": self.cursor}
        if self.admin:
            given["tenant"] = self.tenant
        return {name: value for name, value in given.items() if value is not None}


_JOB_STATUS = TypeAdapter(JobStatus)
_MODELS = TypeAdapter(list[ModelInfo])
_JOB_PAGE = TypeAdapter(JobPage)
_WORKERS = TypeAdapter(list[WorkerInfo])
_ADAPTER = TypeAdapter(AdapterInfo)
_ADAPTERS = TypeAdapter(list[AdapterInfo])
_ADAPTATION = TypeAdapter(AdaptationStatus)


class _Protocol:
    """Every operation of the API as a generator of steps: what to send, how to read answers, when to retry."""

    def __init__(self, base_url: str, *, timeout: float, retries: int, backoff: float) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, not {retries}")
        self.base_url = base_url.rstrip("/")
        self.timeout, self.retries, self.backoff = timeout, retries, backoff

    def submit(self, request: JobRequest) -> _Op[JobStatus]:
        body = request.model_dump(mode="json", exclude_none=True)
        idempotency = {"Idempotency-Key": uuid.uuid4().hex}  # one per submission, the same on each of its retries
        response = yield from self._exchange("POST", "/v1/jobs", json=body, headers=idempotency)
        return _parse(_JOB_STATUS, response)

    def status(self, job_id: str, wait: float, images: bool = True) -> _Op[JobStatus]:
        params: dict[str, Any] = {"wait": wait} if wait > 0 else {}
        if not images:
            params["images"] = "false"
        response = yield from self._exchange("GET", f"/v1/jobs/{job_id}", params=params, extra_timeout=wait)
        return _parse(_JOB_STATUS, response)

    def wait(self, job_id: str, timeout: float | None, progress: bool) -> _Op[JobStatus]:
        timeout = math.inf if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with tqdm(desc=f"job {job_id}", unit="img", disable=not progress, delay=0.5) as bar:
            while True:
                job = yield from self.status(job_id, wait=_poll_seconds(deadline), images=False)
                _show_progress(bar, job)
                if job.status.terminal:
                    job = yield from self.status(job_id, wait=0)  # polls leave the images out
                    return _succeeded(job)
                if time.monotonic() >= deadline:
                    raise JobTimeout(job, timeout)

    def cancel(self, job_id: str) -> _Op[JobStatus]:
        response = yield from self._exchange("DELETE", f"/v1/jobs/{job_id}")
        return _parse(_JOB_STATUS, response)

    def models(self) -> _Op[list[ModelInfo]]:
        response = yield from self._exchange("GET", "/v1/models")
        return _parse(_MODELS, response)

    def jobs(self, query: JobQuery) -> _Op[JobPage]:
        path = "/v1/admin/jobs" if query.admin else "/v1/jobs"
        response = yield from self._exchange("GET", path, params=query.params())
        return _parse(_JOB_PAGE, response)

    def admin_job(self, job_id: str, method: str) -> _Op[JobStatus]:
        response = yield from self._exchange(method, f"/v1/admin/jobs/{job_id}")
        return _parse(_JOB_STATUS, response)

    def workers(self) -> _Op[list[WorkerInfo]]:
        response = yield from self._exchange("GET", "/v1/workers")
        return _parse(_WORKERS, response)

    def upload_adapter(self, data: bytes, model: str | None, shared: bool, name: str | None) -> _Op[AdapterInfo]:
        """Retried like any request: the same file uploaded twice is the same adapter (its id is its SHA-256)."""
        params = {"model": model, "shared": str(shared).lower(), "name": name}
        given = {key: value for key, value in params.items() if value is not None}
        headers = {"Content-Type": "application/octet-stream"}
        response = yield from self._exchange("POST", "/v1/adapters", params=given, content=data, headers=headers)
        return _parse(_ADAPTER, response)

    def adapters(self) -> _Op[list[AdapterInfo]]:
        response = yield from self._exchange("GET", "/v1/adapters")
        return _parse(_ADAPTERS, response)

    def delete_adapter(self, adapter_id: str) -> _Op[AdapterInfo]:
        response = yield from self._exchange("DELETE", f"/v1/adapters/{adapter_id}")
        return _parse(_ADAPTER, response)

    def adapt(self, archive: bytes, model: str | None, options: AdaptOptions) -> _Op[AdaptationStatus]:
        """Not retried: a retry after a lost answer would queue the training twice."""
        params = {"model": model, **options.params()}
        given = {key: value for key, value in params.items() if value is not None}
        gzipped = archive.startswith(b"\x1f\x8b")
        headers = {"Content-Type": "application/gzip" if gzipped else "application/x-tar"}
        response = yield from self._exchange(
            "POST", "/v1/adaptations", params=given, content=archive, headers=headers, retry=False
        )
        return _parse(_ADAPTATION, response)

    def adaptation(self, adaptation_id: str) -> _Op[AdaptationStatus]:
        response = yield from self._exchange("GET", f"/v1/adaptations/{adaptation_id}")
        return _parse(_ADAPTATION, response)

    def cancel_adaptation(self, adaptation_id: str) -> _Op[AdaptationStatus]:
        response = yield from self._exchange("DELETE", f"/v1/adaptations/{adaptation_id}")
        return _parse(_ADAPTATION, response)

    def wait_adaptation(self, adaptation_id: str, timeout: float | None, progress: bool) -> _Op[AdaptationStatus]:
        deadline = time.monotonic() + (math.inf if timeout is None else timeout)
        with tqdm(desc=f"adaptation {adaptation_id}", unit="step", disable=not progress, delay=0.5) as bar:
            while True:
                adaptation = yield from self.adaptation(adaptation_id)
                bar.total, bar.n = adaptation.steps, adaptation.step
                bar.refresh()
                if adaptation.status.terminal:
                    if adaptation.status is not JobState.succeeded:
                        raise AdaptationFailed(adaptation)
                    return adaptation
                if time.monotonic() >= deadline:
                    raise GeneratorError(f"adaptation {adaptation_id} still {adaptation.status} after {timeout:g} s "
                                         f"(step {adaptation.step}/{adaptation.steps})")  # fmt: skip
                yield _Sleep(min(ADAPTATION_POLL_SECONDS, max(0.0, deadline - time.monotonic())))

    def image(self, sha256: str) -> _Op[bytes]:
        response = yield from self._exchange("GET", f"/v1/images/{sha256}")
        actual = hashlib.sha256(response.content).hexdigest()
        if actual != sha256.lower():
            raise IntegrityError(sha256, actual)
        return response.content

    def archive(self, job_id: str) -> _Op[httpx.Response]:
        return (yield from self._exchange("GET", f"/v1/jobs/{job_id}/archive", stream=True))

    def generate(
        self, request: JobRequest, timeout: float | None, progress: bool
    ) -> _Op[tuple[JobStatus, list[bytes]]]:
        job = yield from self.submit(request)
        job = yield from self.wait(job.id, timeout, progress)
        images = yield from self._download(job)
        return job, images

    def _download(self, job: JobStatus) -> _Op[list[bytes]]:
        """Every image of a finished job in index order; an image the job lists twice is fetched once."""
        listed = sorted(job.images, key=lambda info: info.index)
        if [info.index for info in listed] != list(range(job.total)):
            raise GeneratorError(f"job {job.id} succeeded but lists {len(listed)} of its {job.total} images")
        fetched: dict[str, bytes] = {}
        for info in listed:
            if info.sha256 not in fetched:
                fetched[info.sha256] = yield from self.image(info.sha256)
        return [fetched[info.sha256] for info in listed]

    def _exchange(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        extra_timeout: float = 0.0,
        stream: bool = False,
        content: bytes | None = None,
        retry: bool = True,
    ) -> _Op[httpx.Response]:
        """Send one request until it gets an answer that is not worth retrying; return it if it is a 2xx. Without
        ``retry``, a request whose answer was lost is not sent again (the server may have acted on it); a 429 or
        503, which say it did not, still are."""
        url, timeout = self.base_url + path, self.timeout + extra_timeout
        send = _Send(method, url, timeout, params, json, stream, headers, content)
        error: httpx.TransportError | None
        for attempt in range(self.retries + 1):
            try:
                response: httpx.Response = yield send
            except httpx.TransportError as exc:
                error, cause, retry_after = exc, f"{type(exc).__name__}: {exc}", None
                if not retry:
                    raise GeneratorUnavailable(send.url, cause, attempt + 1) from exc
            else:
                if response.status_code not in RETRY_STATUSES:
                    return _checked(response, method, send.url)
                error, cause = None, f"{response.status_code} {format_detail(_detail(response))}"
                retry_after = response.headers.get("Retry-After")
            if attempt < self.retries:
                yield _Sleep(retry_delay(attempt, self.backoff, retry_after))
        raise GeneratorUnavailable(send.url, cause, self.retries + 1) from error


def retry_delay(attempt: int, backoff: float, retry_after: str | None = None) -> float:
    """Seconds to sleep before retry ``attempt`` (0-based): the server's Retry-After if given, else backoff."""
    advised = _parse_retry_after(retry_after) if retry_after else None
    delay = backoff * 2**attempt if advised is None else advised
    return min(max(delay, 0.0), MAX_RETRY_DELAY)


def _parse_retry_after(value: str) -> float | None:
    """Retry-After is either delta-seconds or an HTTP date; None when it is neither."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - datetime.now(UTC)).total_seconds()


def _archive_broken(response: httpx.Response, error: httpx.TransportError) -> GeneratorError:
    return GeneratorError(f"the archive {response.url.path} broke off: {type(error).__name__}: {error}")


def _poll_seconds(deadline: float) -> float:
    return min(LONG_POLL_SECONDS, max(0.0, deadline - time.monotonic()))


def _show_progress(bar: tqdm[Any], job: JobStatus) -> None:
    bar.total, bar.n = job.total, job.done
    bar.set_postfix(cached=job.cached, refresh=False)
    bar.refresh()


def _succeeded(job: JobStatus) -> JobStatus:
    if job.status is JobState.failed:
        raise JobFailed(job)
    if job.status is JobState.cancelled:
        raise JobCancelled(job)
    return job


def _checked(response: httpx.Response, method: str, url: str) -> httpx.Response:
    if not response.is_success:
        raise GeneratorHTTPError(response.status_code, _detail(response), method, url)
    return response


def _detail(response: httpx.Response) -> Any:
    """The ``detail`` of an error body; the raw text (or reason) when a proxy answered with something else."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    return body.get("detail", body) if isinstance(body, dict) else body


def _parse(adapter: TypeAdapter[T], response: httpx.Response) -> T:
    try:
        return adapter.validate_json(response.content)
    except ValidationError as error:
        request = response.request
        raise GeneratorError(
            f"{request.method} {request.url.path} -> {response.status_code}: the body does not match the API "
            f"({error.error_count()} errors; first: {format_detail(error.errors(include_url=False)[:1])})"
        ) from error


# --- the event stream -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobEvent:
    """One event of ``GET /v1/jobs/{id}/events``. ``data`` is a dict (``progress``: status, done, total, cached),
    an ImageInfo (``image``) or the final JobStatus without its images (``end``)."""

    name: str
    id: str | None
    data: Any


_EVENT_DATA: dict[str, TypeAdapter[Any]] = {
    "progress": TypeAdapter(dict[str, Any]),
    "image": TypeAdapter(ImageInfo),
    "end": _JOB_STATUS,
}


class _EventStream:
    """What both clients do with an event stream, without I/O: the request, parsing lines, when to reconnect.

    A stream cut off before its ``end`` event is reopened with ``Last-Event-ID`` (so no image comes twice), with the
    client's retries and backoff; an event received resets the count.
    """

    def __init__(self, ops: _Protocol, job_id: str, last_event_id: str | None) -> None:
        self.ops, self.url, self.last_id = ops, f"{ops.base_url}/v1/jobs/{job_id}/events", last_event_id
        self.failures, self.finished = 0, False
        self._name: str = "message"
        self._id: str | None = None
        self._data: list[str] = []

    def headers(self) -> dict[str, str]:
        return {"Accept": "text/event-stream", **({"Last-Event-ID": self.last_id} if self.last_id else {})}

    def opened(self, response: httpx.Response) -> bool:
        """True to read the body; False when the server ends the stream (204) or is unavailable (then reconnect).
        An error's body must have been read."""
        if response.status_code == 204:
            self.finished = True
            return False
        if response.status_code in RETRY_STATUSES:
            return False
        _checked(response, "GET", self.url)
        return True

    def retry_delay(self, cause: str, retry_after: str | None = None) -> float:
        """Seconds to wait before reconnecting; raises GeneratorUnavailable when the retries are spent."""
        if self.failures >= self.ops.retries:
            raise GeneratorUnavailable(self.url, cause, self.failures + 1)
        self.failures += 1
        return retry_delay(self.failures - 1, self.ops.backoff, retry_after)

    def feed(self, line: str) -> JobEvent | None:
        """One line of the body; an event when the line ends one (SSE: fields, then a blank line)."""
        if line:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                self._name = value
            elif field == "data":
                self._data.append(value)
            elif field == "id":
                self._id = value
            return None  # a comment (": keep-alive") or a field
        if not self._data:
            return None
        name, event_id, data = self._name, self._id, "\n".join(self._data)
        self._name, self._id, self._data = "message", None, []
        if event_id is not None:
            self.last_id = event_id
        self.failures = 0
        self.finished = name == "end"
        adapter = _EVENT_DATA.get(name)
        return JobEvent(name, event_id, adapter.validate_json(data) if adapter else json.loads(data))


# --- the two clients --------------------------------------------------------------------------------------------


class _ClientBase:
    """Construction shared by both clients; subclasses say which httpx client carries the requests."""

    _http_class: type[httpx.Client] | type[httpx.AsyncClient]

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if base_url is None or api_key is None:
            settings = load(ClientSettings)
            base_url = settings.generator_url if base_url is None else base_url
            api_key = settings.api_key if api_key is None else api_key
        try:  # a URL without its scheme would be retried as if the server were down
            checked_url(base_url, HTTP_SCHEMES)
        except ValueError as error:
            raise UserError(f"the generator's URL {error}") from None
        self._ops = _Protocol(base_url, timeout=timeout, retries=retries, backoff=backoff)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        plain_http = urlsplit(base_url).scheme == "http"  # no TLS: skip loading the CA bundle (tens of ms)
        self._http = self._http_class(
            headers=headers,
            timeout=timeout,
            transport=transport,  # type: ignore[arg-type]  # each client is handed its own kind of transport
            verify=not plain_http,
        )

    @property
    def base_url(self) -> str:
        return self._ops.base_url


class GeneratorClient(_ClientBase):
    """Blocking client of the generator (API.md). Defaults come from GIFT_GENERATOR_URL and GIFT_API_KEY."""

    _http_class = httpx.Client
    _http: httpx.Client
    _sleep = staticmethod(time.sleep)

    def submit(self, request: JobRequest) -> JobStatus:
        """Queue a job; return its first status (``queued``, or already finished when all images are cached).

        Retries of this one call carry the same ``Idempotency-Key``: however many reach the server, one job is made.
        """
        return self._run(self._ops.submit(request))

    def status(self, job_id: str, wait: float = 0) -> JobStatus:
        """The job's status; with ``wait`` > 0 (at most 30) the server holds the answer until it is terminal."""
        return self._run(self._ops.status(job_id, wait))

    def wait(self, job_id: str, *, timeout: float | None = None, progress: bool = True) -> JobStatus:
        """Long-poll until the job succeeds; raise JobFailed, JobCancelled or JobTimeout (a TimeoutError)."""
        return self._run(self._ops.wait(job_id, timeout, progress))

    def cancel(self, job_id: str) -> JobStatus:
        return self._run(self._ops.cancel(job_id))

    def events(self, job_id: str, *, last_event_id: str | None = None) -> Iterator[JobEvent]:
        """The job's events as they happen (``progress``, ``image``, ``end``), until its ``end``; a broken stream
        is resumed where it stopped. ``last_event_id`` resumes after an event of an earlier stream."""
        stream = _EventStream(self._ops, job_id, last_event_id)
        while not stream.finished:
            try:
                with self._http.stream("GET", stream.url, headers=stream.headers()) as response:
                    if not response.is_success:
                        response.read()  # the error's detail
                    if stream.opened(response):
                        for line in response.iter_lines():
                            if (event := stream.feed(line)) is not None:
                                yield event
                        cause, retry_after = "the stream ended before the job did", None
                    else:
                        cause, retry_after = f"{response.status_code}", response.headers.get("Retry-After")
            except httpx.TransportError as error:
                cause, retry_after = f"{type(error).__name__}: {error}", None
            if not stream.finished:
                self._sleep(stream.retry_delay(cause, retry_after))

    def models(self) -> list[ModelInfo]:
        return self._run(self._ops.models())

    def jobs(self, query: JobQuery | None = None) -> JobPage:
        """One page of a listing of jobs, newest first (API.md, ``GET /v1/jobs``)."""
        return self._run(self._ops.jobs(query or JobQuery()))

    def admin_status(self, job_id: str) -> JobStatus:
        """Any tenant's job (an admin's key)."""
        return self._run(self._ops.admin_job(job_id, "GET"))

    def admin_cancel(self, job_id: str) -> JobStatus:
        """Cancel any tenant's job (an admin's key)."""
        return self._run(self._ops.admin_job(job_id, "DELETE"))

    def workers(self) -> list[WorkerInfo]:
        return self._run(self._ops.workers())

    def upload_adapter(
        self, data: bytes, *, model: str | None = None, shared: bool = False, name: str | None = None
    ) -> AdapterInfo:
        """Upload a LoRA adapter's ``.safetensors`` file for ``model`` (None: the server's default); jobs name it by
        the returned ``id`` (API.md, Adapters)."""
        return self._run(self._ops.upload_adapter(data, model, shared, name))

    def adapters(self) -> list[AdapterInfo]:
        """The caller's own adapters, then the shared ones."""
        return self._run(self._ops.adapters())

    def delete_adapter(self, adapter_id: str) -> AdapterInfo:
        return self._run(self._ops.delete_adapter(adapter_id))

    def adapt(
        self,
        archive: bytes,
        model: str | None = None,
        *,
        steps: int = 200,
        rank: int = 4,
        learning_rate: float = 1e-4,
        seed: int = 0,
        name: str | None = None,
        shared: bool = False,
    ) -> AdaptationStatus:
        """Queue the training of a LoRA of ``model`` (None: the server's default) on ``archive``
        (gift_common.adaptation_archive.write_archive); its adapter id comes with ``wait_adaptation``."""
        options = AdaptOptions(steps, rank, learning_rate, seed, name, shared)
        return self._run(self._ops.adapt(archive, model, options))

    def adaptation(self, adaptation_id: str) -> AdaptationStatus:
        return self._run(self._ops.adaptation(adaptation_id))

    def cancel_adaptation(self, adaptation_id: str) -> AdaptationStatus:
        return self._run(self._ops.cancel_adaptation(adaptation_id))

    def wait_adaptation(
        self, adaptation_id: str, *, timeout: float | None = None, progress: bool = True
    ) -> AdaptationStatus:
        """Poll until it ends; AdaptationFailed when it failed or was cancelled, GeneratorError after ``timeout``."""
        return self._run(self._ops.wait_adaptation(adaptation_id, timeout, progress))

    def image(self, sha256: str) -> bytes:
        """The PNG bytes named by ``sha256``, checked against it (IntegrityError if they differ)."""
        return self._run(self._ops.image(sha256))

    @contextmanager
    def archive(self, job_id: str) -> Iterator[Iterator[bytes]]:
        """The finished job as a WebDataset tar (``{index:06d}.png``, ``.txt`` the prompt, ``.json`` its parameters),
        streamed: ``with client.archive(job_id) as chunks`` gives the tar's bytes as they arrive, so that a set of
        thousands of images never sits whole in memory. The images are not checked here: hash them as they are
        read. A connection lost midway is a GeneratorError."""
        response = self._run(self._ops.archive(job_id))
        try:
            yield self._chunks(response)
        finally:
            response.close()

    def generate(
        self, request: JobRequest, *, timeout: float | None = None, progress: bool = True
    ) -> tuple[JobStatus, list[bytes]]:
        """Submit, wait, and download every image (verified) in prompt order."""
        return self._run(self._ops.generate(request, timeout, progress))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self, op: _Op[T]) -> T:
        """Carry out the operation's steps, feeding each result (or transport error) back into it."""
        outcome: Any = None
        try:
            while True:
                step = op.throw(outcome) if isinstance(outcome, httpx.TransportError) else op.send(outcome)
                outcome = self._perform(step)
        except StopIteration as finished:
            return cast(T, finished.value)
        finally:
            op.close()

    @staticmethod
    def _chunks(response: httpx.Response) -> Iterator[bytes]:
        try:
            yield from response.iter_bytes()
        except httpx.TransportError as error:
            raise _archive_broken(response, error) from error

    def _perform(self, step: _Send | _Sleep) -> httpx.Response | httpx.TransportError | None:
        if isinstance(step, _Sleep):
            self._sleep(step.seconds)
            return None
        request = self._http.build_request(
            step.method,
            step.url,
            params=step.params,
            json=step.json,
            content=step.content,
            headers=step.headers,
            timeout=step.timeout,
        )
        try:
            response = self._http.send(request, stream=step.stream)
            if step.stream and not response.is_success:  # an error's body is read for its detail
                response.read()
        except httpx.TransportError as error:
            return error
        return response


class AsyncGeneratorClient(_ClientBase):
    """Asyncio client of the generator with the same methods as GeneratorClient, to be awaited."""

    _http_class = httpx.AsyncClient
    _http: httpx.AsyncClient
    _sleep = staticmethod(asyncio.sleep)

    async def submit(self, request: JobRequest) -> JobStatus:
        return await self._run(self._ops.submit(request))

    async def status(self, job_id: str, wait: float = 0) -> JobStatus:
        return await self._run(self._ops.status(job_id, wait))

    async def wait(self, job_id: str, *, timeout: float | None = None, progress: bool = True) -> JobStatus:
        return await self._run(self._ops.wait(job_id, timeout, progress))

    async def cancel(self, job_id: str) -> JobStatus:
        return await self._run(self._ops.cancel(job_id))

    async def events(self, job_id: str, *, last_event_id: str | None = None) -> AsyncIterator[JobEvent]:
        stream = _EventStream(self._ops, job_id, last_event_id)
        while not stream.finished:
            try:
                async with self._http.stream("GET", stream.url, headers=stream.headers()) as response:
                    if not response.is_success:
                        await response.aread()
                    if stream.opened(response):
                        async for line in response.aiter_lines():
                            if (event := stream.feed(line)) is not None:
                                yield event
                        cause, retry_after = "the stream ended before the job did", None
                    else:
                        cause, retry_after = f"{response.status_code}", response.headers.get("Retry-After")
            except httpx.TransportError as error:
                cause, retry_after = f"{type(error).__name__}: {error}", None
            if not stream.finished:
                await self._sleep(stream.retry_delay(cause, retry_after))

    async def models(self) -> list[ModelInfo]:
        return await self._run(self._ops.models())

    async def jobs(self, query: JobQuery | None = None) -> JobPage:
        return await self._run(self._ops.jobs(query or JobQuery()))

    async def admin_status(self, job_id: str) -> JobStatus:
        return await self._run(self._ops.admin_job(job_id, "GET"))

    async def admin_cancel(self, job_id: str) -> JobStatus:
        return await self._run(self._ops.admin_job(job_id, "DELETE"))

    async def workers(self) -> list[WorkerInfo]:
        return await self._run(self._ops.workers())

    async def upload_adapter(
        self, data: bytes, *, model: str | None = None, shared: bool = False, name: str | None = None
    ) -> AdapterInfo:
        return await self._run(self._ops.upload_adapter(data, model, shared, name))

    async def adapters(self) -> list[AdapterInfo]:
        return await self._run(self._ops.adapters())

    async def delete_adapter(self, adapter_id: str) -> AdapterInfo:
        return await self._run(self._ops.delete_adapter(adapter_id))

    async def adapt(
        self,
        archive: bytes,
        model: str | None = None,
        *,
        steps: int = 200,
        rank: int = 4,
        learning_rate: float = 1e-4,
        seed: int = 0,
        name: str | None = None,
        shared: bool = False,
    ) -> AdaptationStatus:
        options = AdaptOptions(steps, rank, learning_rate, seed, name, shared)
        return await self._run(self._ops.adapt(archive, model, options))

    async def adaptation(self, adaptation_id: str) -> AdaptationStatus:
        return await self._run(self._ops.adaptation(adaptation_id))

    async def cancel_adaptation(self, adaptation_id: str) -> AdaptationStatus:
        return await self._run(self._ops.cancel_adaptation(adaptation_id))

    async def wait_adaptation(
        self, adaptation_id: str, *, timeout: float | None = None, progress: bool = True
    ) -> AdaptationStatus:
        return await self._run(self._ops.wait_adaptation(adaptation_id, timeout, progress))

    async def image(self, sha256: str) -> bytes:
        return await self._run(self._ops.image(sha256))

    @asynccontextmanager
    async def archive(self, job_id: str) -> AsyncIterator[AsyncIterator[bytes]]:
        """``async with client.archive(job_id) as chunks``: the tar's bytes as they arrive (see GeneratorClient)."""
        response = await self._run(self._ops.archive(job_id))
        try:
            yield self._chunks(response)
        finally:
            await response.aclose()

    async def generate(
        self, request: JobRequest, *, timeout: float | None = None, progress: bool = True
    ) -> tuple[JobStatus, list[bytes]]:
        return await self._run(self._ops.generate(request, timeout, progress))

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _run(self, op: _Op[T]) -> T:
        outcome: Any = None
        try:
            while True:
                step = op.throw(outcome) if isinstance(outcome, httpx.TransportError) else op.send(outcome)
                outcome = await self._perform(step)
        except StopIteration as finished:
            return cast(T, finished.value)
        finally:
            op.close()

    @staticmethod
    async def _chunks(response: httpx.Response) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_bytes():
                yield chunk
        except httpx.TransportError as error:
            raise _archive_broken(response, error) from error

    async def _perform(self, step: _Send | _Sleep) -> httpx.Response | httpx.TransportError | None:
        if isinstance(step, _Sleep):
            await self._sleep(step.seconds)
            return None
        request = self._http.build_request(
            step.method,
            step.url,
            params=step.params,
            json=step.json,
            content=step.content,
            headers=step.headers,
            timeout=step.timeout,
        )
        try:
            response = await self._http.send(request, stream=step.stream)
            if step.stream and not response.is_success:  # an error's body is read for its detail
                await response.aread()
        except httpx.TransportError as error:
            return error
        return response
