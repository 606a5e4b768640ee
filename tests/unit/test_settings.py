"""Each role reads and checks only its own settings; a malformed one is one line naming it, never quoting it."""

from __future__ import annotations

import pytest

from gift_common.errors import UserError
from gift_common.settings import ApiSettings, ClientSettings, HomeSettings, Settings, WorkerSettings, load


@pytest.mark.parametrize(
    ("variable", "value", "role", "message"),
    [
        ("GIFT_BATCH_SIZE", "0", WorkerSettings, "GIFT_BATCH_SIZE: Input should be greater than or equal to 1"),
        ("GIFT_CLAIM_TIMEOUT_SECONDS", "abc", WorkerSettings, "GIFT_CLAIM_TIMEOUT_SECONDS: Input should be a valid"),
        ("GIFT_REDIS_URL", "notaurl", ApiSettings, "GIFT_REDIS_URL: must start with redis:// or rediss:// or unix://"),
        ("GIFT_API_KEYS", "alice-key-1234", ApiSettings, "GIFT_API_KEYS: entry 1 is not of the form tenant:value"),
        ("GIFT_GENERATOR_URL", "127.0.0.1:8000", ClientSettings, "GIFT_GENERATOR_URL: must start with http://"),
    ],
)
def test_a_malformed_variable_is_one_line_naming_it(monkeypatch, variable, value, role, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(UserError) as refused:
        load(role)
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)
    assert value not in str(refused.value), "a value may be a secret: it is not quoted"


@pytest.mark.parametrize("role", [ClientSettings, HomeSettings])
def test_a_client_reads_none_of_the_servers_settings(monkeypatch, role):
    for variable, value in {"GIFT_API_KEYS": "malformed", "GIFT_CLAIM_TIMEOUT_SECONDS": "abc",
                            "GIFT_BATCH_SIZE": "0", "GIFT_REDIS_URL": "notaurl"}.items():  # fmt: skip
        monkeypatch.setenv(variable, value)
    load(role)


def test_a_flag_is_checked_by_its_variables_rule_and_named(monkeypatch):
    monkeypatch.setenv("GIFT_BATCH_SIZE", "4")
    assert load(WorkerSettings, {"batch_size": ("--batch-size", 2)}).batch_size == 2
    for bad in (0, -3):
        with pytest.raises(UserError, match=r"^--batch-size: Input should be greater than or equal to 1$"):
            load(WorkerSettings, {"batch_size": ("--batch-size", bad)})


def test_every_role_is_part_of_the_whole_list():
    every = set(Settings.model_fields)
    for role in (ApiSettings, WorkerSettings, ClientSettings, HomeSettings):
        assert set(role.model_fields) <= every


def test_urls_are_logged_without_their_credentials():
    settings = ApiSettings(redis_url="redis://user:pw-1234@redis.internal:6380/2", blob_store="s3://bucket/prefix")
    assert settings.redis_location() == "redis://redis.internal:6380/2"
    assert ApiSettings(redis_url="redis://:pw-1234@h:1/0").redis_location() == "redis://h:1/0"
    assert settings.blob_store_location() == "s3://bucket/prefix"
