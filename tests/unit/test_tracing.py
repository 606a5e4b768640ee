"""Tracing is off unless a collector is named, and then goes to the URL of GIFT_OTLP_ENDPOINT or the standard
variables; off, a job stores no trace and no span is made."""

from __future__ import annotations

import pytest

from gift_common.errors import UserError
from gift_common.schemas import JobRequest
from gift_common.settings import TelemetrySettings, load
from services.generator import store, tracing

STANDARD = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


@pytest.fixture(autouse=True)
def no_standard_variables(monkeypatch):
    for name in STANDARD:
        monkeypatch.delenv(name, raising=False)


def test_the_traces_url_comes_from_the_gift_setting_then_the_standard_variables(monkeypatch):
    assert tracing.endpoint_of(None) is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")
    assert tracing.endpoint_of(None) == "http://collector:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4318/custom")
    assert tracing.endpoint_of(None) == "http://traces:4318/custom"
    assert tracing.endpoint_of("https://gift-collector") == "https://gift-collector/v1/traces"


def test_off_nothing_is_traced_and_a_job_stores_no_trace():
    assert tracing.setup("gift-api", None) is None
    assert not tracing.active() and tracing.traceparent() is None and tracing.log_ids() == {}
    with tracing.span(tracing.ENQUEUE) as span, tracing.job_spans(tracing.BATCH, {"j": (None, {})}) as spans:
        assert span is None and spans == {}
    origin = {"request_id": "r1", "traceparent": tracing.traceparent()}
    fields = store.new_job_fields("j", "alice", JobRequest(prompts=["a"]), store.now_iso(), origin)
    assert fields["request_id"] == "r1" and "traceparent" not in fields


def test_settings_refuse_an_endpoint_without_a_scheme_and_a_format_not_offered(monkeypatch):
    monkeypatch.setenv("GIFT_OTLP_ENDPOINT", "collector:4318")
    monkeypatch.setenv("GIFT_LOG_FORMAT", "yaml")
    with pytest.raises(UserError) as error:
        load(TelemetrySettings)
    assert "GIFT_LOG_FORMAT" in str(error.value) and "GIFT_OTLP_ENDPOINT: must start with http://" in str(error.value)
