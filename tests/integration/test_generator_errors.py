"""Every 4xx of API.md, on a real API process with tenants and small limits, sharing the healthy stack's Redis."""

from __future__ import annotations

import json
import sys

import httpx
import jsonschema
import pytest
import redis

from gift_common import redis_keys
from services.stack import Process, free_port, wait_until
from services.testing.auth_walk import BAD_CREDENTIALS, walk
from services.testing.generator import IDLE_MODEL, register_idle_model

pytestmark = pytest.mark.integration

ALICE, BOB = {"Authorization": "Bearer alice-key"}, {"Authorization": "Bearer bob-key"}
LIMITS = {
    "GIFT_API_KEYS": "alice:alice-key,bob:bob-key",
    "GIFT_MAX_QUEUED_JOBS_PER_TENANT": "2",
    "GIFT_MAX_PROMPTS_PER_JOB": "10",
    "GIFT_MAX_PROMPT_CHARS": "50",
    "GIFT_MAX_BODY_BYTES": "20000",
}


@pytest.fixture(scope="module")
def api(stack, tmp_path_factory):
    """A second API process with auth and limits on the stack's Redis; yields its URL."""
    port = free_port()
    args = [sys.executable, "-m", "services.cli", "generator", "serve", "--port", str(port)]
    env = {**stack.env, **LIMITS, "GIFT_REDIS_URL": stack.redis_url}
    process = Process("limited-api", args, tmp_path_factory.mktemp("api") / "api.log", env)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{url}/healthz").status_code == 200, 60, "API", process.popen, process.log)
    register_idle_model(stack.redis_url)
    yield url
    process.stop()


def _detail(response: httpx.Response) -> str:
    return json.dumps(response.json()["detail"])


def test_401_without_a_valid_key(api):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic YWxpY2U6eA=="}):
        response = httpx.post(f"{api}/v1/jobs", json={"prompts": ["x"]}, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "API key" in _detail(response)
    assert httpx.get(f"{api}/v1/models").status_code == 401
    assert httpx.get(f"{api}/healthz").status_code == 200, "operations routes need no key"


def test_404_for_another_tenants_job_and_unknown_ids(api):
    job = httpx.post(f"{api}/v1/jobs", json={"prompts": ["x"], "model": IDLE_MODEL}, headers=ALICE).json()
    assert httpx.get(f"{api}/v1/jobs/{job['id']}", headers=ALICE).status_code == 200
    for method in ("GET", "DELETE"):
        response = httpx.request(method, f"{api}/v1/jobs/{job['id']}", headers=BOB)
        assert response.status_code == 404 and job["id"] in _detail(response)
    assert httpx.get(f"{api}/v1/jobs/{job['id']}/archive", headers=BOB).status_code == 404
    assert httpx.get(f"{api}/v1/jobs/{'f' * 32}", headers=ALICE).status_code == 404
    assert httpx.get(f"{api}/v1/images/{'0' * 64}", headers=ALICE).status_code == 404
    httpx.delete(f"{api}/v1/jobs/{job['id']}", headers=ALICE)


def test_every_v1_route_refuses_every_bad_credential_and_hides_other_tenants_jobs(api):
    figures = walk(api, ("alice", "alice-key"), "bob-key", images_per_tenant=False)
    assert len(figures.routes) >= 6 and figures.calls > len(figures.routes) * len(BAD_CREDENTIALS)
    assert figures.holes == []


@pytest.mark.parametrize(
    ("body", "field", "rule"),
    [
        ({}, "prompts", "Field required"),
        ({"prompts": []}, "prompts", "at least 1"),
        ({"prompts": [" "]}, "prompts", "prompt 0 is empty"),
        ({"prompts": ["x"] * 11}, "prompts", "at most 10"),
        ({"prompts": ["x" * 51]}, "prompts.0", "at most 50"),
        ({"prompts": ["x"], "seed": -1}, "seed", "greater than or equal to 0"),
        ({"prompts": ["x", "y"], "seeds": [1]}, "seeds", "must match"),
        ({"prompts": ["x"], "num_inference_steps": 0}, "num_inference_steps", "greater than or equal to 1"),
        ({"prompts": ["x"], "num_inference_steps": 201}, "num_inference_steps", "less than or equal to 200"),
        ({"prompts": ["x"], "guidance_scale": 31}, "guidance_scale", "less than or equal to 30"),
        ({"prompts": ["x"], "height": 30}, "height", "multiple of 8"),
        ({"prompts": ["x"], "width": 4096}, "width", "less than or equal to 2048"),
        ({"prompts": ["x"], "model": "nope"}, "model", "no live worker serves 'nope'; live workers serve: "),
        ({"prompts": ["x"], "colour": "red"}, "colour", "Extra inputs are not permitted"),
    ],
)
def test_422_names_the_field_and_the_rule(api, body, field, rule):
    response = httpx.post(f"{api}/v1/jobs", json=body, headers=ALICE)
    assert response.status_code == 422
    detail = _detail(response)
    assert field.split(".")[0] in detail and rule in detail, detail


def test_422_for_non_finite_guidance_and_bad_json(api):
    response = httpx.post(f"{api}/v1/jobs", content=b'{"prompts": ["x"], "guidance_scale": NaN}',
                          headers={**ALICE, "Content-Type": "application/json"})  # fmt: skip
    assert response.status_code == 422 and "finite" in _detail(response)
    response = httpx.post(
        f"{api}/v1/jobs", content=b'{"prompts": [', headers={**ALICE, "Content-Type": "application/json"}
    )
    assert response.status_code == 422 and "JSON" in _detail(response)
    assert httpx.get(f"{api}/v1/jobs/not-a-job-id", headers=ALICE).status_code == 422
    assert httpx.get(f"{api}/v1/jobs/{'a' * 32}?wait=31", headers=ALICE).status_code == 422


def test_413_for_a_body_over_the_limit(api):
    body = json.dumps({"prompts": ["x" * 40] * 1000}).encode()
    response = httpx.post(f"{api}/v1/jobs", content=body, headers={**ALICE, "Content-Type": "application/json"})
    assert response.status_code == 413 and "20000 bytes" in _detail(response)

    def chunked():
        yield body

    response = httpx.post(f"{api}/v1/jobs", content=chunked(), headers={**ALICE, "Content-Type": "application/json"})
    assert response.status_code == 413, "a chunked body without Content-Length is counted too"


def test_429_when_a_tenant_has_too_many_unfinished_jobs(api):
    ids = [
        httpx.post(f"{api}/v1/jobs", json={"prompts": ["x"], "model": IDLE_MODEL}, headers=BOB).json()["id"]
        for _ in range(2)
    ]
    response = httpx.post(f"{api}/v1/jobs", json={"prompts": ["x"], "model": IDLE_MODEL}, headers=BOB)
    assert response.status_code == 429 and "limit is 2" in _detail(response)
    other = httpx.post(f"{api}/v1/jobs", json={"prompts": ["x"], "model": IDLE_MODEL}, headers=ALICE)
    assert other.status_code == 202, "the limit is per tenant"
    httpx.delete(f"{api}/v1/jobs/{ids[0]}", headers=BOB)
    again = httpx.post(f"{api}/v1/jobs", json={"prompts": ["x"], "model": IDLE_MODEL}, headers=BOB)
    assert again.status_code == 202, "a cancelled job no longer counts"
    for job_id, headers in [(ids[1], BOB), (again.json()["id"], BOB), (other.json()["id"], ALICE)]:
        httpx.delete(f"{api}/v1/jobs/{job_id}", headers=headers)


def test_409_for_the_archive_of_an_unfinished_job_and_cancelling_a_finished_one(api, stack):
    queued = httpx.post(f"{api}/v1/jobs", json={"prompts": ["x"], "model": IDLE_MODEL}, headers=ALICE).json()
    response = httpx.get(f"{api}/v1/jobs/{queued['id']}/archive", headers=ALICE)
    assert response.status_code == 409 and "queued" in _detail(response)
    done = httpx.post(f"{api}/v1/jobs", json={"prompts": ["quick"], "num_inference_steps": 2}, headers=ALICE).json()
    finished = httpx.get(f"{api}/v1/jobs/{done['id']}?wait=30", headers=ALICE, timeout=40).json()
    assert finished["status"] == "succeeded"
    response = httpx.delete(f"{api}/v1/jobs/{done['id']}", headers=ALICE)
    assert response.status_code == 409 and "succeeded" in _detail(response)
    httpx.delete(f"{api}/v1/jobs/{queued['id']}", headers=ALICE)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (rb'{"prompts": ["\ud800"]}', "prompts"),
        (rb'{"prompts": ["x", "ok \udc00"]}', "prompts"),
        (rb'{"prompts": ["x"], "negative_prompt": "\ud800"}', "negative_prompt"),
        (rb'{"prompts": ["x"], "model": "\ud800"}', "model"),
        (rb'{"prompts": ["x"], "\ud800": 1}', "body"),  # a key: refused while parsing the body
    ],
)
def test_422_for_a_lone_surrogate_in_any_string(api, body, field):
    """JSON may escape half a UTF-16 pair; such text cannot be hashed or stored, and once was a 500."""
    response = httpx.post(f"{api}/v1/jobs", content=body, headers={**ALICE, "Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert field in error["loc"] and ("surrogate" in error["msg"] or error["type"] == "string_unicode"), error


@pytest.mark.parametrize("field", ["seed", "num_inference_steps", "height", "width", "guidance_scale"])
def test_422_for_a_boolean_in_a_number_field(api, field):
    response = httpx.post(f"{api}/v1/jobs", json={"prompts": ["x"], field: True}, headers=ALICE)
    assert response.status_code == 422 and "a boolean is not a number" in _detail(response), response.text
    response = httpx.post(f"{api}/v1/jobs", json={"prompts": ["x"], "seeds": [False]}, headers=ALICE)
    assert response.status_code == 422 and "seeds" in _detail(response)


def test_422_for_an_image_over_the_cost_limit_which_models_states(api):
    (model,) = [m for m in httpx.get(f"{api}/v1/models", headers=ALICE).json() if m["name"] == IDLE_MODEL]
    assert model["max_image_cost"] == 512 * 512 * 100, "the default allows SD 1.5 at 512x512 with 50 steps, twice"
    huge = {"prompts": ["x"], "model": IDLE_MODEL, "height": 2048, "width": 2048, "num_inference_steps": 200}
    response = httpx.post(f"{api}/v1/jobs", json=huge, headers=ALICE)
    assert response.status_code == 422, response.text
    assert _detail(response).startswith('"height, width, num_inference_steps: 2048 x 2048 pixels x 200 steps')
    native = {"prompts": ["x"], "model": IDLE_MODEL, "num_inference_steps": 200}  # 32 x 32 x 200: fine
    sd15 = {"prompts": ["x"], "model": IDLE_MODEL, "height": 512, "width": 512, "num_inference_steps": 50}
    for body in (native, sd15):
        accepted = httpx.post(f"{api}/v1/jobs", json=body, headers=ALICE)
        assert accepted.status_code == 202, accepted.text
        httpx.delete(f"{api}/v1/jobs/{accepted.json()['id']}", headers=ALICE)


def _described(spec: dict, method: str, route: str, response: httpx.Response) -> None:
    """The response's status is listed for the route, its JSON body fits the listed schema, its headers are there."""
    listed = spec["paths"][route][method.lower()]["responses"]
    described = listed.get(str(response.status_code))
    assert described, f"{method} {route} answered {response.status_code}; /openapi.json lists only {sorted(listed)}"
    schema = described["content"]["application/json"]["schema"]
    jsonschema.validate(response.json(), {**schema, "components": spec["components"]})
    for header in described.get("headers", {}):
        assert header in response.headers, f"{method} {route} {response.status_code} lacks its header {header}"


def test_400_for_a_body_that_is_not_utf8_text_as_the_openapi_says(api):
    headers = {**ALICE, "Content-Type": "application/json"}
    response = httpx.post(f"{api}/v1/jobs", content=b'{"prompts": ["\xff"]}', headers=headers)
    assert response.status_code == 400, response.text
    _described(httpx.get(f"{api}/openapi.json").json(), "POST", "/v1/jobs", response)


def test_405_lists_every_method_of_the_path(api):
    response = httpx.request("OPTIONS", f"{api}/v1/jobs/{'f' * 32}", headers=ALICE)
    assert response.status_code == 405
    assert {"GET", "DELETE"} <= set(response.headers["Allow"].split(", ")), response.headers["Allow"]
    assert httpx.put(f"{api}/v1/jobs", headers=ALICE).headers["Allow"] == "GET, POST"
    for method in ("OPTIONS", "GET"):  # GET: the concrete path is routed before /v1/images/{sha256}, not a 422
        generations = httpx.request(method, f"{api}/v1/images/generations", headers=ALICE)
        assert generations.status_code == 405, (method, generations.text)
        assert generations.headers["Allow"] == "POST", "the literal route, not /v1/images/{sha256}"
    assert httpx.get(f"{api}/v1/images/generation", headers=ALICE).status_code == 422, "other forms: the pattern"


def test_openapi_describes_every_answer_of_every_kind(api, stack, tmp_path):
    spec = httpx.get(f"{api}/openapi.json").json()
    job = "/v1/jobs/{job_id}"
    queued = httpx.post(f"{api}/v1/jobs", json={"prompts": ["x"], "model": IDLE_MODEL}, headers=BOB)
    done = httpx.post(f"{api}/v1/jobs", json={"prompts": ["openapi 410"], "num_inference_steps": 2}, headers=ALICE)
    finished = httpx.get(f"{api}/v1/jobs/{done.json()['id']}?wait=30", headers=ALICE, timeout=40).json()
    redis.Redis.from_url(stack.redis_url).delete(redis_keys.png(finished["images"][0]["sha256"]))
    unknown, bad_body = "f" * 32, {**ALICE, "Content-Type": "application/json"}
    answers = [
        ("POST", "/v1/jobs", queued),
        ("GET", job, httpx.get(f"{api}/v1/jobs/{finished['id']}", headers=ALICE)),
        ("GET", "/v1/models", httpx.get(f"{api}/v1/models", headers=ALICE)),
        ("POST", "/v1/jobs", httpx.post(f"{api}/v1/jobs", json={"prompts": ["x"]})),  # 401
        ("GET", "/v1/models", httpx.get(f"{api}/v1/models", headers={"Authorization": "Bearer wrong"})),  # 401
        ("GET", job, httpx.get(f"{api}/v1/jobs/{unknown}", headers=ALICE)),  # 404
        ("DELETE", job, httpx.delete(f"{api}/v1/jobs/{unknown}", headers=ALICE)),  # 404
        ("GET", "/v1/images/{sha256}", httpx.get(f"{api}/v1/images/{'0' * 64}", headers=ALICE)),  # 404
        ("GET", f"{job}/archive", httpx.get(f"{api}/v1/jobs/{queued.json()['id']}/archive", headers=BOB)),  # 409
        ("DELETE", job, httpx.delete(f"{api}/v1/jobs/{finished['id']}", headers=ALICE)),  # 409
        ("GET", f"{job}/archive", httpx.get(f"{api}/v1/jobs/{finished['id']}/archive", headers=ALICE)),  # 410
        ("POST", "/v1/jobs", httpx.post(f"{api}/v1/jobs", content=b"[" * 30000, headers=bad_body)),  # 413
        ("GET", "/healthz", httpx.request("GET", f"{api}/healthz", content=b" " * 30000)),  # 413
        ("POST", "/v1/jobs", httpx.post(f"{api}/v1/jobs", json={}, headers=ALICE)),  # 422, schema
        ("POST", "/v1/jobs", httpx.post(f"{api}/v1/jobs", json={"prompts": ["x"], "model": "nope"}, headers=ALICE)),
        ("GET", job, httpx.get(f"{api}/v1/jobs/not-a-job?wait=99", headers=ALICE)),  # 422, path and query
    ]
    second = httpx.post(f"{api}/v1/jobs", json={"prompts": ["x"], "model": IDLE_MODEL}, headers=BOB)
    answers.append(("POST", "/v1/jobs", httpx.post(f"{api}/v1/jobs", json={"prompts": ["y"]}, headers=BOB)))  # 429
    answers += _answers_without_redis(stack, tmp_path)
    kinds = {response.status_code for _, _, response in answers}
    assert kinds == {200, 202, 401, 404, 409, 410, 413, 422, 429, 503}, kinds
    assert {type(r.json()["detail"]) for _, _, r in answers if r.status_code == 422} == {list, str}
    for method, route, response in answers:
        _described(spec, method, route, response)
    for queued_job in (queued, second):
        httpx.delete(f"{api}/v1/jobs/{queued_job.json()['id']}", headers=BOB)


def _answers_without_redis(stack, tmp_path) -> list[tuple[str, str, httpx.Response]]:
    """An API process whose Redis does not answer: the 503s."""
    port = free_port()
    args = [sys.executable, "-m", "services.cli", "generator", "serve", "--port", str(port)]
    env = {**stack.env, **LIMITS, "GIFT_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    process = Process("api-without-redis", args, tmp_path / "api.log", env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/healthz").status_code == 200, 60, "API", process.popen, process.log)
        return [
            ("POST", "/v1/jobs", httpx.post(f"{url}/v1/jobs", json={"prompts": ["x"]}, headers=ALICE, timeout=30)),
            ("GET", "/readyz", httpx.get(f"{url}/readyz", timeout=30)),
            ("GET", "/metrics", httpx.get(f"{url}/metrics", timeout=30)),
        ]
    finally:
        process.stop()
