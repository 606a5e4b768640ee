"""OpenTelemetry traces of a job, from the API request through Redis to the worker's pipeline call and its webhook.

Off unless an OTLP endpoint is configured (``GIFT_OTLP_ENDPOINT``, else the standard
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``); off, no span is made (FastAPI's own
request spans are off too, api/main.py) and the SDK is not even imported. On, spans go out over OTLP/HTTP (protobuf)
in batches, from a thread.

A job carries its trace in Redis: the API stores the W3C ``traceparent`` of the span that enqueued it with the job,
and a worker (or the API sending the job's webhook) continues from it, so the spans of one job share one trace:

    POST /v1/jobs (server) -> gift.job.enqueue (producer) -> gift.worker.batch (consumer, one per pipeline call)
                                                          -> gift.webhook.deliver (client)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from gift_common.settings import without_credentials

ENQUEUE, BATCH, WEBHOOK = "gift.job.enqueue", "gift.worker.batch", "gift.webhook.deliver"
_propagator = TraceContextTextMapPropagator()
_tracer: Tracer | None = None  # set by setup when tracing is on
_shutdown: Callable[[], None] | None = None  # the provider's shutdown, which sends the spans still queued
CLOSE_SECONDS = 2.0  # the longest a stopping process waits for its last spans to leave

Attributes = Mapping[str, AttributeValue]


def endpoint_of(gift_endpoint: str | None) -> str | None:
    """Where spans go (the traces URL), or None: tracing is off."""
    if gift_endpoint:
        return f"{gift_endpoint.rstrip('/')}/v1/traces"
    if traces := os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return traces
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return f"{base.rstrip('/')}/v1/traces" if base else None


def setup(service: str, gift_endpoint: str | None) -> str | None:
    """Export this process's spans, as ``service`` (unless OTEL_SERVICE_NAME names it), when an endpoint is
    configured; returns where they go without any user:password, for the log, or None when tracing is off."""
    global _tracer, _shutdown
    url = endpoint_of(gift_endpoint)
    if url is None:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or service})
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)  # close() sends the last spans, in time
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    trace.set_tracer_provider(provider)
    _tracer, _shutdown = provider.get_tracer("gift"), provider.shutdown
    return without_credentials(url)


def active() -> bool:
    return _tracer is not None


def close() -> None:
    """Send the spans still queued and stop tracing, as the process stops; wait CLOSE_SECONDS at most, as a
    collector that does not answer is retried for up to OTEL_EXPORTER_OTLP_TIMEOUT (10 s). Not left to an exit
    handler: the API's server ends its process by the signal that stopped it, where none runs."""
    global _tracer, _shutdown
    if _shutdown is None:
        return
    closing = threading.Thread(target=_shutdown, name="trace-close", daemon=True)
    closing.start()
    closing.join(CLOSE_SECONDS)
    _tracer, _shutdown = None, None


def parent_of(traceparent: str | None) -> Context | None:
    """The context a stored or received ``traceparent`` names; None (the current one) for none or a malformed one."""
    return _propagator.extract({"traceparent": traceparent}) if traceparent else None


def traceparent() -> str | None:
    """The current span as a W3C ``traceparent``, to store with a job; None when tracing is off."""
    if _tracer is None:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


@contextmanager
def span(
    name: str,
    *,
    parent: Context | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Attributes | None = None,
) -> Iterator[Span | None]:
    """A span, current for the block, the child of ``parent`` (else of the current span); None when tracing is off.
    An exception marks it an error by its type alone: a message may quote what a trace must not hold."""
    if _tracer is None:
        yield None
        return
    with _tracer.start_as_current_span(
        name, context=parent, kind=kind, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as current:
        try:
            yield current
        except BaseException as error:
            current.set_status(Status(StatusCode.ERROR, type(error).__name__))
            raise


@contextmanager
def job_spans(name: str, jobs: Mapping[str, tuple[str | None, Attributes]]) -> Iterator[dict[str, Span]]:
    """One span for each job of a pipeline call, each the child of its job's stored ``traceparent`` (the jobs of one
    call may belong to as many traces), open for the block; empty when tracing is off."""
    if _tracer is None:
        yield {}
        return
    tracer = _tracer
    spans = {
        job_id: tracer.start_span(name, context=parent_of(parent), kind=SpanKind.CONSUMER, attributes=attributes)
        for job_id, (parent, attributes) in jobs.items()
    }
    try:
        yield spans
    except BaseException as error:
        for each in spans.values():
            each.set_status(Status(StatusCode.ERROR, type(error).__name__))
        raise
    finally:
        for each in spans.values():
            each.end()


def use(span: Span | None) -> AbstractContextManager[object]:
    """``span`` current for a block, so that the log lines in it carry its ids; nothing for None."""
    if span is None:
        return nullcontext()
    return trace.use_span(span, record_exception=False, set_status_on_exception=False)


def annotate(**ids: str) -> None:
    """Name the current span's job or tenant (``gift.job_id``, ``gift.tenant``) once the request has read it."""
    if _tracer is not None:
        trace.get_current_span().set_attributes({f"gift.{name}": value for name, value in ids.items()})


def log_ids() -> dict[str, str]:
    """The trace and span ids of the current span, for a log line; empty when tracing is off or no span is open."""
    if _tracer is None:
        return {}
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": trace.format_trace_id(context.trace_id), "span_id": trace.format_span_id(context.span_id)}
