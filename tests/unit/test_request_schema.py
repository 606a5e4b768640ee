"""The JSON schemas of /openapi.json refuse what the API refuses: prompts, callback URLs, null headers."""

from __future__ import annotations

import httpx
import jsonschema
import pytest
from pydantic import ValidationError

from gift_common.schemas import JobRequest
from services.generator.api.main import create_app


@pytest.mark.parametrize("prompt", ["", " ", "\t\n", "\x1c", "\x85", "\u3000", "a", " a ", "\ufeff", "é"])
def test_the_schema_and_the_validator_agree_on_empty_prompts(prompt):
    try:
        JobRequest(prompts=[prompt])
        accepted = True
    except ValidationError:
        accepted = False
    schema_valid = jsonschema.Draft202012Validator(JobRequest.model_json_schema()).is_valid({"prompts": [prompt]})
    assert schema_valid == accepted, (prompt, accepted)


URLS = ["", "http://a", "https://h.example:8443/p?q=1#f", "http://u:p@h/", "http://h:65535/", "http://h/é",
        "ftp://h/", "http://", "http:///x", "http://@h", "http://a b", "HTTP://a", "http://[::1]/", "http://:80",
        "http://h:65536/", " http://a", "http://\xad/", "http://bücher.example/", "http://h/\x7f"]  # fmt: skip


@pytest.mark.parametrize("url", URLS)
def test_the_schema_and_the_validator_agree_on_callback_urls_that_the_client_can_post_to(url):
    try:
        JobRequest(prompts=["x"], callback_url=url)
        accepted = True
    except ValidationError as error:
        accepted = False
        assert "must be an http:// or https:// URL" in str(error)
    schema_valid = jsonschema.Draft202012Validator(JobRequest.model_json_schema()).is_valid(
        {"prompts": ["x"], "callback_url": url}
    )
    assert schema_valid == accepted, (url, accepted)
    if accepted:
        httpx.URL(url)  # raises on a URL the webhook's client could not POST to


def test_no_header_of_the_openapi_may_be_null():
    """A header is sent or left out: a schema that allows null has clients send the text "null"."""
    spec = create_app().openapi()
    headers = [
        (path, parameter["name"], parameter["schema"])
        for path, operations in spec["paths"].items()
        for operation in operations.values()
        for parameter in operation.get("parameters", [])
        if parameter["in"] == "header"
    ]
    assert {name for _, name, _ in headers} == {"Idempotency-Key", "last-event-id"}
    for path, name, schema in headers:
        assert schema["type"] == "string" and "anyOf" not in schema, (path, name, schema)


def test_every_seed_a_job_reports_is_one_it_accepts_back():
    top = 2**63 - 1
    assert JobRequest(prompts=["a", "b"], seed=top - 1).seed_of(1) == top
    with pytest.raises(ValidationError, match="with 2 images seed may be at most 9223372036854775806"):
        JobRequest(prompts=["a", "b"], seed=top)
    assert JobRequest(prompts=["a", "b"], seeds=[top, top]).seed_of(1) == top, "explicit seeds are each checked"
