"""The JSON schema of a JobRequest (as /openapi.json serves it) refuses the prompts the validator refuses."""

from __future__ import annotations

import jsonschema
import pytest
from pydantic import ValidationError

from gift_common.schemas import JobRequest


@pytest.mark.parametrize("prompt", ["", " ", "\t\n", "\x1c", "\x85", "\u3000", "a", " a ", "\ufeff", "é"])
def test_the_schema_and_the_validator_agree_on_empty_prompts(prompt):
    try:
        JobRequest(prompts=[prompt])
        accepted = True
    except ValidationError:
        accepted = False
    schema_valid = jsonschema.Draft202012Validator(JobRequest.model_json_schema()).is_valid({"prompts": [prompt]})
    assert schema_valid == accepted, (prompt, accepted)
