"""POST /v1/images/generations through OpenAI's own Python client, pointed at a real stack."""

from __future__ import annotations

import base64
import hashlib
import io
import threading
import time
from collections.abc import Iterator

import httpx
import jsonschema
import openai
import pytest
import redis
from PIL import Image

from gift_common import redis_keys
from services.stack import LocalStack
from services.testing.generator import FAST_ENV

pytestmark = pytest.mark.integration

KEY = "alice-key"
JSON = {"Content-Type": "application/json"}
FAST = {"seed": 7, "num_inference_steps": 2}  # this service's extensions, as OpenAI's client sends them


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, model_home) -> Iterator[LocalStack]:
    env = {"GIFT_HOME": str(model_home), **FAST_ENV, "GIFT_API_KEYS": f"alice:{KEY},bob:bob-key"}
    with LocalStack(tmp_path_factory.mktemp("openai"), env=env) as served:
        yield served.start(workers=1)


@pytest.fixture
def client(stack) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{stack.api_url}/v1", api_key=KEY, max_retries=0, timeout=120) as sdk:
        yield sdk


def test_b64_json_images_come_from_the_same_jobs_and_cache(client, stack):
    answer = client.images.generate(
        model="tinyworld", prompt="a red circle", n=2, size="32x32", response_format="b64_json", extra_body=FAST
    )
    pngs = [base64.b64decode(image.b64_json or "") for image in answer.data]
    assert len(pngs) == 2 and pngs[0] != pngs[1], "n images of one prompt get seeds seed, seed + 1"
    assert all(Image.open(io.BytesIO(png)).size == (32, 32) for png in pngs)
    assert answer.created > 0 and all(image.url is None for image in answer.data)
    same = {"prompts": ["a red circle"] * 2, "seeds": [7, 8], "num_inference_steps": 2, "height": 32, "width": 32}
    job = httpx.post(f"{stack.api_url}/v1/jobs", json=same, headers={"Authorization": f"Bearer {KEY}"}).json()
    assert job["cached"] == 2, job
    assert [image["sha256"] for image in job["images"]] == [hashlib.sha256(png).hexdigest() for png in pngs]


def test_url_images_point_at_the_image_route(client, stack):
    answer = client.images.generate(prompt="a blue square", response_format="url", user="end-user-1", extra_body=FAST)
    (image,) = answer.data
    assert image.url and image.url.startswith(f"{stack.api_url}/v1/images/"), image.url
    png = httpx.get(image.url, headers={"Authorization": f"Bearer {KEY}"}).content
    assert hashlib.sha256(png).hexdigest() == image.url.rsplit("/", 1)[1]


def test_a_retry_with_the_same_idempotency_key_makes_no_second_job(client, stack):
    jobs = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    before = set(jobs.scan_iter(redis_keys.job("*")))
    key = {"Idempotency-Key": "openai-retry"}
    answers = [client.images.generate(prompt="a retried dot", extra_body=FAST, extra_headers=key) for _ in range(2)]
    assert answers[0].data == answers[1].data
    assert len({key for key in set(jobs.scan_iter(redis_keys.job("*"))) - before if key.count(":") == 2}) == 1


def test_idempotency_keys_are_scoped_to_the_tenant(stack):
    body = {"prompts": ["one key, two tenants"], "num_inference_steps": 2}
    tenants = [{"Idempotency-Key": "shared-value", "Authorization": f"Bearer {key}"} for key in (KEY, "bob-key")]
    jobs = [httpx.post(f"{stack.api_url}/v1/jobs", json=body, headers=headers) for headers in tenants]
    assert [job.status_code for job in jobs] == [202, 202]
    assert jobs[0].json()["id"] != jobs[1].json()["id"]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"style": "vivid"}, "style"),
        ({"quality": "hd"}, "quality"),
        ({"size": "30x30"}, "size"),
        ({"n": 11}, "n"),
        ({"model": "dall-e-3"}, "model"),
        ({"extra_body": {"background": "transparent"}}, "background"),
        ({"extra_body": {"num_inference_steps": 0}}, "num_inference_steps"),
        ({"size": "2048x2048", "extra_body": {"num_inference_steps": 200}}, "size"),
    ],
)
def test_a_field_this_service_cannot_honour_is_a_400_naming_it(client, fields, param):
    with pytest.raises(openai.BadRequestError) as refused:
        client.images.generate(prompt="anything", **fields)
    assert refused.value.status_code == 400
    assert refused.value.param == param and refused.value.type == "invalid_request_error", refused.value.body


def test_a_wrong_key_is_openais_401(stack):
    sdk = openai.OpenAI(base_url=f"{stack.api_url}/v1", api_key="wrong", max_retries=0)
    with sdk, pytest.raises(openai.AuthenticationError) as refused:
        sdk.images.generate(prompt="anything")
    assert refused.value.code == "invalid_api_key"


def test_openapi_describes_its_answers(stack):
    spec = httpx.get(f"{stack.api_url}/openapi.json").json()
    route, auth = f"{stack.api_url}/v1/images/generations", {"Authorization": f"Bearer {KEY}"}
    answers = [
        httpx.post(route, json={"prompt": "a green dot", **FAST}, headers=auth, timeout=120),
        httpx.post(route, json={"prompt": "a green dot", "style": "vivid"}, headers=auth),
        httpx.post(route, content=b'{"prompt": "\xff"}', headers={**auth, "Content-Type": "application/json"}),
        httpx.post(route, json={"prompt": "a green dot"}),
    ]
    assert [answer.status_code for answer in answers] == [200, 400, 400, 401]
    for answer in answers:
        described = spec["paths"]["/v1/images/generations"]["post"]["responses"][str(answer.status_code)]
        schema = described["content"]["application/json"]["schema"]
        jsonschema.validate(answer.json(), {**schema, "components": spec["components"]})


def test_the_official_clients_retries_join_the_first_job(tmp_path, model_home):
    """No worker, a short wait: OpenAI's client retries each 504 without an Idempotency-Key; one job is made."""
    env = {"GIFT_HOME": str(model_home), **FAST_ENV, "GIFT_API_KEYS": f"alice:{KEY}", "GIFT_IMAGES_WAIT_SECONDS": "1"}
    with LocalStack(tmp_path / "stack", env=env) as stack:
        stack.redis.start()  # type: ignore[union-attr]  # a stack made without a URL has its own
        stack.start_api()
        jobs = redis.Redis.from_url(stack.redis_url, decode_responses=True)
        sdk = openai.OpenAI(base_url=f"{stack.api_url}/v1", api_key=KEY, max_retries=2, timeout=60)
        with sdk:
            with pytest.raises(openai.InternalServerError) as timed_out:
                sdk.images.generate(prompt="a cat")
            assert timed_out.value.status_code == 504 and timed_out.value.code == "timeout"
            api_log = stack.api.log.read_text()  # type: ignore[union-attr]
            assert api_log.count("idempotency key answered with it") == 2, "the client's two retries joined the job"
            (made,) = _job_keys(jobs)
            auth = {"Authorization": f"Bearer {KEY}"}
            cancelled = httpx.delete(f"{stack.api_url}/v1/jobs/{made.rsplit(':', 1)[1]}", headers=auth)
            assert cancelled.json()["status"] == "cancelled"
            with pytest.raises(openai.InternalServerError) as again:
                sdk.with_options(max_retries=0).images.generate(prompt="a cat")
            assert again.value.status_code == 504, "a cancelled job is not joined: the request makes a new one"
            assert len(_job_keys(jobs)) == 2
            args = (jobs, _job_keys(jobs), stack.api_url, auth)
            canceller = threading.Thread(target=_cancel_the_next_job, args=args)
            canceller.start()
            with pytest.raises(openai.ConflictError):  # cancelled while waited for: told not to retry
                sdk.images.generate(prompt="a dog")
            canceller.join()
        assert len(_job_keys(jobs)) == 3, "the 409 was not retried: a retry would have made a fourth job"


def _job_keys(jobs: redis.Redis) -> set[str]:
    return {key for key in jobs.scan_iter(redis_keys.job("*")) if key.count(":") == 2}


def _cancel_the_next_job(jobs: redis.Redis, before: set[str], api: str, auth: dict[str, str]) -> None:
    deadline = time.monotonic() + 10
    while not (new := _job_keys(jobs) - before) and time.monotonic() < deadline:
        time.sleep(0.01)
    for key in new:
        httpx.delete(f"{api}/v1/jobs/{key.rsplit(':', 1)[1]}", headers=auth)


@pytest.mark.parametrize(
    ("content", "headers", "message", "param"),
    [
        (b'{"prompt": "' + b"x" * 1001 + b'"}', JSON, "prompt: 1001 characters", "prompt"),
        (b"not json", JSON, "the body is not valid JSON", None),
        (b"[]", JSON, "the body: Input should be a valid dictionary", None),
        (b'{"prompt": "a cat"}', {}, "Content-Type: application/json", None),
        (b'{"prompt": "a cat", "size": "30x30"}', JSON, "size: expected 'WxH'", "size"),
        (b'{"prompt": "a cat", "n": 2, "seed": 9223372036854775807}', JSON, "seed: images use seed + i", "seed"),
    ],
)  # fmt: skip
def test_errors_name_the_field_as_this_route_calls_it(stack, content, headers, message, param):
    auth = {"Authorization": f"Bearer {KEY}"}
    answer = httpx.post(f"{stack.api_url}/v1/images/generations", content=content, headers={**auth, **headers})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["message"].startswith(message) or message in error["message"], error
    assert error["param"] == param and not error["message"].startswith("Value error"), error
