"""The generator client against an in-memory fake of the API (httpx.MockTransport), sync and async.

Most tests run once per client: the ``connect`` fixture hands back the async client behind a view that runs each
call with ``asyncio.run``, so one test body checks both. Retry sleeps are recorded, not slept.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from gift_common.client import (
    MAX_RETRY_DELAY,
    AdaptationFailed,
    AsyncGeneratorClient,
    GeneratorClient,
    GeneratorError,
    GeneratorHTTPError,
    GeneratorUnavailable,
    IntegrityError,
    JobCancelled,
    JobFailed,
    JobTimeout,
    retry_delay,
)
from gift_common.schemas import JobRequest

BASE = "http://generator.test"
PNG = {i: f"png-bytes-{i}".encode() for i in range(4)}
SHA = {i: hashlib.sha256(data).hexdigest() for i, data in PNG.items()}

Handler = Callable[[httpx.Request], httpx.Response]


def job_json(job_id: str = "j1", status: str = "queued", total: int = 2, done: int = 0, **extra: Any) -> dict:
    return {
        "id": job_id,
        "status": status,
        "total": total,
        "done": done,
        "cached": extra.pop("cached", 0),
        "error": extra.pop("error", None),
        "created_at": "2026-01-01T00:00:00Z",
        "finished_at": None,
        "images": extra.pop("images", []),
    }


def image_json(index: int, sha: str | None = None) -> dict:
    sha = sha or SHA[index]
    return {"index": index, "prompt": f"p{index}", "seed": index, "sha256": sha, "url": f"/v1/images/{sha}"}


class FakeGenerator:
    """Just enough of the API: a job that advances one step per status poll, images, archive, models."""

    def __init__(self, statuses: list[dict] | None = None) -> None:
        done = job_json(status="succeeded", done=2, cached=1, images=[image_json(1), image_json(0)])
        self.statuses = statuses or [job_json(status="running", done=1, cached=1), done]
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        method, path = request.method, request.url.path
        if (method, path) == ("POST", "/v1/jobs"):
            return httpx.Response(202, json=job_json(), headers={"Location": "/v1/jobs/j1"})
        if (method, path) == ("GET", "/v1/jobs/j1"):
            return httpx.Response(200, json=self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0])
        if (method, path) == ("DELETE", "/v1/jobs/j1"):
            return httpx.Response(200, json=job_json(status="cancelled"))
        if (method, path) == ("GET", "/v1/jobs/j1/archive"):
            return httpx.Response(200, content=make_tar(), headers={"Content-Type": "application/x-tar"})
        if (method, path) == ("GET", "/v1/models"):
            return httpx.Response(200, json=[{"name": "tinyworld", "height": 32, "width": 32, "default": True}])
        if method == "GET" and path.startswith("/v1/images/"):
            by_sha = {sha: PNG[i] for i, sha in SHA.items()}
            return httpx.Response(200, content=by_sha[path.rsplit("/", 1)[1]], headers={"Content-Type": "image/png"})
        return httpx.Response(404, json={"detail": f"no route {method} {path}"})

    def paths(self, method: str | None = None) -> list[str]:
        return [r.url.path for r in self.requests if method in (None, r.method)]


def make_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("000000.png")
        info.size = len(PNG[0])
        tar.addfile(info, io.BytesIO(PNG[0]))
    return buffer.getvalue()


class SyncView:
    """Calls an AsyncGeneratorClient's coroutine methods as plain functions, each under its own asyncio.run."""

    def __init__(self, client: AsyncGeneratorClient) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not inspect.iscoroutinefunction(attr):
            return attr
        return lambda *args, **kwargs: asyncio.run(attr(*args, **kwargs))


@pytest.fixture(params=["sync", "async"])
def connect(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """Build a client of the requested kind on a handler; its retry sleeps go to ``client.sleeps``."""
    made: list[Any] = []

    def make(handler: Handler, **kwargs: Any) -> Any:
        kwargs = {"base_url": BASE, "api_key": "", **kwargs}
        sleeps: list[float] = []
        if request.param == "sync":
            client: Any = GeneratorClient(transport=httpx.MockTransport(handler), **kwargs)
            client._sleep = sleeps.append
        else:
            inner = AsyncGeneratorClient(transport=httpx.MockTransport(handler), **kwargs)

            async def record(seconds: float) -> None:
                sleeps.append(seconds)

            inner._sleep = record
            client = SyncView(inner)
        client.sleeps = sleeps
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


# --- success paths ----------------------------------------------------------------------------------------------


def test_submit_posts_the_request_without_unset_fields(connect):
    fake = FakeGenerator()
    job = connect(fake).submit(JobRequest(prompts=["a cat", "a dog"], seed=3))
    assert (job.id, job.status, job.total) == ("j1", "queued", 2)
    body = json.loads(fake.requests[0].content)
    assert body == {"prompts": ["a cat", "a dog"], "seed": 3, "num_inference_steps": 25, "guidance_scale": 7.5}


def test_status_sends_the_long_poll_parameter_only_when_waiting(connect):
    fake = FakeGenerator()
    client = connect(fake)
    assert client.status("j1").status == "running"
    assert client.status("j1", wait=2.5).status == "succeeded"
    assert [r.url.params.get("wait") for r in fake.requests] == [None, "2.5"]


def test_wait_long_polls_until_done_and_shows_progress(connect, capsys):
    fake = FakeGenerator([job_json(), job_json(status="running", done=1, cached=1), job_json(status="succeeded")])
    job = connect(fake).wait("j1")
    assert job.status == "succeeded"
    polls, final = fake.requests[:-1], fake.requests[-1]
    assert [(r.url.params["wait"], r.url.params["images"]) for r in polls] == [("30.0", "false")] * 3
    assert "wait" not in final.url.params and "images" not in final.url.params  # the images, once, at the end
    err = capsys.readouterr().err
    assert "job j1" in err and "cached=1" in err


def test_wait_without_progress_prints_nothing(connect, capsys):
    assert connect(FakeGenerator()).wait("j1", progress=False).status == "succeeded"
    assert capsys.readouterr().err == ""


def test_cancel_models_archive(connect):
    fake = FakeGenerator()
    client = connect(fake)
    assert client.cancel("j1").status == "cancelled"
    assert fake.requests[-1].method == "DELETE"
    assert [(m.name, m.default) for m in client.models()] == [("tinyworld", True)]
    with tarfile.open(fileobj=io.BytesIO(streamed_archive(client, "j1"))) as tar:
        assert tar.extractfile("000000.png").read() == PNG[0]


def streamed_archive(client: Any, job_id: str) -> bytes:
    """The archive's bytes as either client streams them."""
    if not isinstance(client, SyncView):
        with client.archive(job_id) as chunks:
            return b"".join(chunks)

    async def collect() -> bytes:
        async with client._client.archive(job_id) as chunks:
            return b"".join([chunk async for chunk in chunks])

    return asyncio.run(collect())


def test_the_archive_reaches_the_caller_while_the_server_still_sends_it() -> None:
    sent: list[int] = []

    def body():
        for i in range(3):
            sent.append(i)
            yield f"part {i};".encode()

    handler = lambda request: httpx.Response(200, content=body())  # noqa: E731
    with GeneratorClient(BASE, "", transport=httpx.MockTransport(handler)) as client, client.archive("j1") as chunks:
        assert (next(chunks), sent) == (b"part 0;", [0])  # the rest is not sent before it is asked for
        assert b"".join(chunks) == b"part 1;part 2;"


class BrokenOff(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body whose connection is lost after its first chunk, for either client."""

    def __iter__(self):
        yield b"the first image"
        raise httpx.ReadError("connection reset by peer")

    async def __aiter__(self):
        yield b"the first image"
        raise httpx.ReadError("connection reset by peer")


def test_an_archive_refused_or_broken_off_is_a_generator_error(connect) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/jobs/gone/archive":
            return httpx.Response(410, json={"detail": "images [3] of job gone were evicted from storage"})
        return httpx.Response(200, stream=BrokenOff())

    client = connect(handler)
    with pytest.raises(GeneratorHTTPError, match="410: images \\[3\\] of job gone were evicted") as caught:
        streamed_archive(client, "gone")
    assert caught.value.status_code == 410
    with pytest.raises(GeneratorError, match="archive /v1/jobs/j1/archive broke off: ReadError: connection reset"):
        streamed_archive(client, "j1")


def test_image_is_verified(connect):
    assert connect(FakeGenerator()).image(SHA[2]) == PNG[2]


def test_generate_downloads_every_image_in_index_order_once(connect):
    images = [image_json(2, SHA[1]), image_json(0), image_json(1)]  # listed out of order; index 2 repeats 1
    fake = FakeGenerator([job_json(status="succeeded", total=3, done=3, images=images)])
    job, data = connect(fake).generate(JobRequest(prompts=["a", "b", "b"]), progress=False)
    assert job.status == "succeeded"
    assert data == [PNG[0], PNG[1], PNG[1]]
    assert fake.paths("GET")[-2:] == [f"/v1/images/{SHA[0]}", f"/v1/images/{SHA[1]}"]


def test_generate_refuses_a_job_that_lists_too_few_images(connect):
    fake = FakeGenerator([job_json(status="succeeded", total=3, done=3, images=[image_json(0)])])
    with pytest.raises(GeneratorError, match="lists 1 of its 3 images"):
        connect(fake).generate(JobRequest(prompts=["a", "b", "c"]), progress=False)


def test_async_client_in_one_event_loop():
    async def main() -> tuple:
        async with AsyncGeneratorClient(BASE, "", transport=httpx.MockTransport(FakeGenerator())) as client:
            result = await client.generate(JobRequest(prompts=["a", "b"]), progress=False)
        return client, result

    client, (job, data) = asyncio.run(main())
    assert job.status == "succeeded" and data == [PNG[0], PNG[1]]
    assert client._http.is_closed


def test_sync_client_is_a_context_manager():
    with GeneratorClient(BASE, "", transport=httpx.MockTransport(FakeGenerator())) as client:
        assert client.models()[0].name == "tinyworld"
    assert client._http.is_closed


# --- auth and settings ------------------------------------------------------------------------------------------


def test_auth_header_is_sent_when_a_key_is_set(connect):
    fake = FakeGenerator()
    connect(fake, api_key="s3cret").models()
    assert fake.requests[0].headers["Authorization"] == "Bearer s3cret"


def test_no_auth_header_without_a_key(connect):
    fake = FakeGenerator()
    connect(fake).models()
    assert "Authorization" not in fake.requests[0].headers


def test_url_and_key_default_to_the_environment(connect, monkeypatch):
    monkeypatch.setenv("GIFT_GENERATOR_URL", "http://from-env:9000/")
    monkeypatch.setenv("GIFT_API_KEY", "env-key")
    fake = FakeGenerator()
    connect(fake, base_url=None, api_key=None).models()
    assert str(fake.requests[0].url) == "http://from-env:9000/v1/models"
    assert fake.requests[0].headers["Authorization"] == "Bearer env-key"


# --- errors -----------------------------------------------------------------------------------------------------


def answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Handler:
    return lambda request: httpx.Response(status, json=body, headers=headers)


VALIDATION_422 = {
    "detail": [
        {"loc": ["body", "prompts", 0], "msg": "Value error, prompt 0 is empty", "type": "value_error"},
        {"loc": ["body", "seed"], "msg": "Input should be greater than or equal to 0", "type": "greater_than_equal"},
    ]
}


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (401, {"detail": "missing or unknown API key"}, "POST /v1/jobs -> 401: missing or unknown API key"),
        (404, {"detail": "job j1 not found"}, "POST /v1/jobs -> 404: job j1 not found"),
        (
            422,
            VALIDATION_422,
            "POST /v1/jobs -> 422: body.prompts.0: prompt 0 is empty; body.seed: Input should be greater than or "
            "equal to 0",
        ),
        (
            429,
            {"detail": "tenant a has 64 queued jobs,\nthe limit"},
            "POST /v1/jobs -> 429: tenant a has 64 queued jobs, the limit",
        ),
    ],
)
def test_client_errors_read_as_one_line(connect, status, body, message):
    with pytest.raises(GeneratorHTTPError) as caught:
        connect(answer(status, body)).submit(JobRequest(prompts=["x"]))
    assert str(caught.value) == message
    assert (caught.value.status_code, caught.value.method) == (status, "POST")
    assert caught.value.url == f"{BASE}/v1/jobs"


def test_an_error_body_that_is_not_json_is_quoted(connect):
    client = connect(lambda request: httpx.Response(404, text="<html>\n  Not Found\n</html>"))
    with pytest.raises(GeneratorHTTPError, match=r"^GET /v1/models -> 404: <html> Not Found </html>$"):
        client.models()


def test_a_body_that_breaks_the_contract_is_a_generator_error(connect):
    with pytest.raises(GeneratorError, match=r"GET /v1/jobs/j1 -> 200: the body does not match the API"):
        connect(answer(200, {"id": "j1"})).status("j1")


def test_corrupted_image_raises_integrity_error(connect):
    client = connect(lambda request: httpx.Response(200, content=b"flipped bits"))
    with pytest.raises(IntegrityError) as caught:
        client.image(SHA[0])
    assert caught.value.actual == hashlib.sha256(b"flipped bits").hexdigest()


@pytest.mark.parametrize(
    ("final", "error", "pattern"),
    [
        (job_json(status="failed", done=1, error="CUDA out of memory"), JobFailed, "failed .* CUDA out of memory"),
        (job_json(status="cancelled", done=1), JobCancelled, "cancelled after 1/2"),
    ],
)
def test_wait_raises_when_the_job_does_not_succeed(connect, final, error, pattern):
    with pytest.raises(error, match=pattern) as caught:
        connect(FakeGenerator([job_json(status="running"), final])).wait("j1", progress=False)
    assert caught.value.job.status == final["status"]


def test_wait_gives_up_after_its_timeout(connect):
    fake = FakeGenerator([job_json(status="running")])
    with pytest.raises(TimeoutError, match=r"still running after 0\.05 s") as caught:
        connect(fake).wait("j1", timeout=0.05, progress=False)
    assert isinstance(caught.value, JobTimeout)
    assert all(float(r.url.params.get("wait", 0)) <= 0.05 for r in fake.requests)


# --- retries ----------------------------------------------------------------------------------------------------


def flaky(failures: list[httpx.Response | Exception]) -> tuple[Handler, list[httpx.Request]]:
    """A server that answers each of ``failures`` in turn (raising the exceptions), then behaves."""
    seen: list[httpx.Request] = []
    fake = FakeGenerator()

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if failures:
            failure = failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return failure
        return fake(request)

    return handler, seen


def test_retries_on_503_honouring_retry_after(connect):
    unavailable = httpx.Response(503, json={"detail": "redis unreachable"}, headers={"Retry-After": "0.01"})
    handler, seen = flaky([unavailable, httpx.Response(502), httpx.ConnectError("refused")])
    client = connect(handler)
    assert client.submit(JobRequest(prompts=["x"])).id == "j1"
    assert len(seen) == 4
    assert client.sleeps == [0.01, 1.0, 2.0]  # Retry-After, then backoff 0.5 * 2**attempt


def test_a_submit_sends_one_idempotency_key_on_all_its_retries_and_a_new_one_per_submit(connect):
    handler, seen = flaky([httpx.ReadTimeout("the answer was lost"), httpx.Response(503)])
    client = connect(handler)
    client.submit(JobRequest(prompts=["x"]))
    client.submit(JobRequest(prompts=["x"]))
    keys = [request.headers.get("Idempotency-Key") for request in seen]
    assert len(keys) == 4 and keys[0] == keys[1] == keys[2] != keys[3] and all(keys), keys


def test_unavailable_after_the_retries_are_spent(connect):
    handler, seen = flaky([httpx.ConnectError("connection refused")] * 10)
    client = connect(handler, retries=3)
    with pytest.raises(GeneratorUnavailable) as caught:
        client.models()
    assert len(seen) == 4 and client.sleeps == [0.5, 1.0, 2.0]
    assert str(caught.value) == (
        f"generator unavailable at {BASE}/v1/models after 4 attempts; last cause: ConnectError: connection refused"
    )
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


def test_unavailable_names_the_last_status(connect):
    client = connect(answer(504, {"detail": "upstream timed out"}), retries=1)
    with pytest.raises(GeneratorUnavailable, match=r"last cause: 504 upstream timed out$"):
        client.status("j1")


def test_client_errors_are_not_retried(connect):
    handler, seen = flaky([httpx.Response(429, json={"detail": "slow down"})])
    client = connect(handler)
    with pytest.raises(GeneratorHTTPError):
        client.models()
    assert len(seen) == 1 and client.sleeps == []


def test_retry_delay_is_capped_and_reads_http_dates():
    assert retry_delay(10, backoff=0.5) == MAX_RETRY_DELAY
    assert retry_delay(0, backoff=0.5, retry_after="3600") == MAX_RETRY_DELAY
    assert retry_delay(0, backoff=0.5, retry_after="-3") == 0.0
    assert retry_delay(2, backoff=0.5, retry_after="soon") == 2.0
    in_20s = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    assert 15 < retry_delay(0, backoff=0.5, retry_after=in_20s) <= 20


def test_client_imports_nothing_heavy():
    code = "import sys, gift_common.client; assert not {'torch', 'diffusers'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- adaptation jobs --------------------------------------------------------------------------------------------


def adaptation_json(status: str = "queued", step: int = 0, **extra: Any) -> dict:
    ends = {name: extra.get(name) for name in ("adapter", "error", "finished")}
    return {"id": "ad-1", "model": "tinyworld", "status": status, "step": step, "steps": 4, "created": 1.0, **ends}


def adaptations(statuses: list[dict]) -> tuple[Handler, list[httpx.Request]]:
    """A server of one adaptation job whose status advances one step per read."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if (request.method, request.url.path) == ("POST", "/v1/adaptations"):
            return httpx.Response(202, json=adaptation_json())
        if (request.method, request.url.path) == ("GET", "/v1/adaptations/ad-1"):
            return httpx.Response(200, json=statuses.pop(0) if len(statuses) > 1 else statuses[0])
        return httpx.Response(404, json={"detail": "no route"})

    return handler, seen


def test_adapt_posts_the_archive_with_its_type_and_parameters_and_waits_for_the_adapter(connect):
    done = adaptation_json("succeeded", 4, adapter="a" * 64, finished=2.0)
    handler, seen = adaptations([adaptation_json("running", 2), done])
    client = connect(handler)
    queued = client.adapt(b"\x1f\x8b gzipped tar", "tinyworld", steps=4, rank=2, name="cats", shared=True)
    assert queued.status == "queued" and queued.steps == 4
    post = seen[0]
    assert post.headers["Content-Type"] == "application/gzip" and post.content == b"\x1f\x8b gzipped tar"
    assert dict(post.url.params) == {"model": "tinyworld", "steps": "4", "rank": "2", "learning_rate": "0.0001",
                                     "seed": "0", "name": "cats", "shared": "true"}  # fmt: skip
    assert client.wait_adaptation("ad-1", progress=False).adapter == "a" * 64
    assert len(client.sleeps) == 1, "one pause between the two reads"


def test_a_plain_tar_is_sent_as_such_and_its_model_left_to_the_server(connect):
    handler, seen = adaptations([adaptation_json()])
    connect(handler).adapt(b"plain tar")
    assert seen[0].headers["Content-Type"] == "application/x-tar" and "model" not in seen[0].url.params


def test_waiting_for_a_failed_or_cancelled_adaptation_raises_with_its_reason(connect):
    for status, text in [("failed", "adaptation ad-1 failed at step 1/4: training failed: boom"),
                         ("cancelled", "adaptation ad-1 cancelled at step 1/4")]:  # fmt: skip
        handler, _ = adaptations(
            [adaptation_json(status, 1, error="training failed: boom" if status == "failed" else None)]
        )
        with pytest.raises(AdaptationFailed) as ended:
            connect(handler).wait_adaptation("ad-1", progress=False)
        assert str(ended.value) == text and ended.value.adaptation.status == status


def test_an_adaptation_whose_answer_was_lost_is_not_posted_again_but_a_503_is_retried(connect):
    handler, seen = flaky([httpx.ReadTimeout("the answer was lost")])
    with pytest.raises(GeneratorUnavailable, match="after 1 attempts"):
        connect(handler).adapt(b"tar")
    assert len(seen) == 1, "the server may have queued it: a second POST would train it twice"
    handler, seen = adaptations([adaptation_json()])
    retried, _ = flaky([httpx.Response(503, headers={"Retry-After": "0.01"})])
    calls: list[httpx.Request] = []

    def then_serve(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return retried(request) if len(calls) == 1 else handler(request)

    assert connect(then_serve).adapt(b"tar").id == "ad-1" and len(calls) == 2
