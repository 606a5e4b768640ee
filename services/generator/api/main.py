"""The generator API process: builds the FastAPI app from settings and serves it with uvicorn."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from starlette.routing import compile_path

from gift_common.settings import ApiSettings, load
from services.generator import logs, tracing
from services.generator.api.adaptation_routes import adaptations
from services.generator.api.adapter_routes import adapters
from services.generator.api.errors import JobError
from services.generator.api.events import JobEvents
from services.generator.api.jobs import REDIS_FULL, JobService
from services.generator.api.listings import listings
from services.generator.api.middleware import BodySizeLimit, RequestIds, RequestMetrics
from services.generator.api.openai_images import images
from services.generator.api.routes import ops, v1
from services.generator.api.stream import streams
from services.generator.api.webhooks import WebhookSender
from services.generator.blobs import open_blob_store

log = logging.getLogger("gift.api")
CONSOLE = Path(__file__).parent / "console"  # the web console's static files, served at /ui/


def connect(url: str, *, decode: bool) -> Redis:
    """A client that fails fast while Redis is down (the API answers 503) and reconnects by itself."""
    return Redis.from_url(
        url,
        decode_responses=decode,
        socket_connect_timeout=2,
        socket_timeout=10,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=2),
        health_check_interval=15,
    )


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or load(ApiSettings)
    blob_store = open_blob_store(settings.blob_store, settings.s3_endpoint_url)  # a bad URL stops the start here

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis, blobs = connect(settings.redis_url, decode=True), connect(settings.redis_url, decode=False)
        events = JobEvents()
        listener = asyncio.create_task(events.listen(redis))
        app.state.settings = settings
        app.state.jobs = JobService(redis, blobs, settings, events, blob_store)
        webhooks = asyncio.create_task(WebhookSender(app.state.jobs).run())
        announce = asyncio.create_task(_announce_when_listening(app, redis, settings))
        yield
        for task in (listener, webhooks, announce):
            task.cancel()
        await redis.aclose()
        await blobs.aclose()
        await asyncio.to_thread(tracing.close)

    app = FastAPI(
        title="GIFT generator",
        version="1",
        description="Batch text-to-image synthesis over a Redis job queue (see API.md).",
        lifespan=lifespan,
        # With tracing on (tracing.py), the framework's own span of each request, named by its route (POST /v1/jobs),
        # the child of the caller's traceparent; without operation spans, metrics (Prometheus has them) or OTel logs
        # (they would carry exception messages).
        telemetry={"tracing": tracing.active(), "operation_spans": False, "metrics": False, "logs": False},
    )
    app.include_router(v1)
    app.include_router(listings)
    app.include_router(images)
    app.include_router(streams)
    app.include_router(adapters)
    app.include_router(adaptations)
    app.include_router(ops)
    app.mount("/ui", StaticFiles(directory=CONSOLE, html=True), name="console")
    app.add_exception_handler(JobError, _job_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(405, _method_not_allowed)
    app.add_exception_handler(redis_errors.ConnectionError, _redis_down)
    app.add_exception_handler(redis_errors.TimeoutError, _redis_down)
    app.add_exception_handler(redis_errors.OutOfMemoryError, _redis_full)
    limits = {
        "/v1/adapters": (settings.max_adapter_bytes, "GIFT_MAX_ADAPTER_BYTES"),
        "/v1/adaptations": (settings.max_adaptation_bytes, "GIFT_MAX_ADAPTATION_BYTES"),
    }
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes, by_path=limits)
    app.add_middleware(RequestMetrics)
    app.add_middleware(RequestIds)  # the last added runs first: every line of the request has its id
    _headers_never_null(app)
    return app


async def _announce_when_listening(app: FastAPI, redis: Redis, settings: ApiSettings) -> None:
    """Say "ready" once the port is bound (the lifespan starts before it is), and whether Redis answers then."""
    server: uvicorn.Server | None = getattr(app.state, "server", None)
    while server is not None and not server.started:
        await asyncio.sleep(0.05)
    try:
        await redis.ping()
        reached = "answers"
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.AuthenticationError) as error:
        reached = f"does not answer yet ({type(error).__name__}): new jobs get 503 until it does"
    where = f" on http://{server.config.host}:{server.config.port}" if server else ""
    auth = "on" if settings.api_keys else "off (GIFT_API_KEYS unset: local use only)"
    log.info("generator API ready%s: redis at %s %s, images in %s, auth %s",
             where, settings.redis_location(), reached, settings.blob_store_location(), auth)  # fmt: skip


def _headers_never_null(app: FastAPI) -> None:
    """An optional header is sent or left out; it is never JSON ``null``, as the framework's schema of one says (so a
    client or fuzzer reading /openapi.json sends the text ``null``, which Last-Event-ID's pattern refuses)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()  # the framework builds it once and keeps it: this edit runs on that one copy
        for operation in (op for path in schema["paths"].values() for op in path.values()):
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "header" and "anyOf" in parameter["schema"]:
                    options = [o for o in parameter["schema"].pop("anyOf") if o != {"type": "null"}]
                    (only,) = options
                    parameter["schema"].update(only)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


async def _job_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, JobError)
    return JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=error.headers)


async def _invalid_request(_request: Request, error: Exception) -> JSONResponse:
    """422 naming each field and rule; the offending input is not echoed (it may be huge, or NaN)."""
    assert isinstance(error, RequestValidationError)
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in error.errors()]
    return JSONResponse({"detail": detail}, status_code=422)


async def _method_not_allowed(request: Request, _error: Exception) -> JSONResponse:
    """405 whose Allow lists every method /openapi.json has for the path: the framework lists only the methods of
    the first route it matched (GET /v1/jobs/{id} and DELETE /v1/jobs/{id} are two routes). A literal template
    (/v1/images/generations) is the path's own, before any template with parameters that also matches it."""
    paths: dict[str, dict[str, Any]] = request.app.openapi()["paths"]
    path = request.url.path
    matching = [template for template in paths if compile_path(template)[0].match(path)]
    templates = [path] if path in paths else matching
    methods = sorted({method.upper() for template in templates for method in paths[template]})
    return JSONResponse({"detail": "Method Not Allowed"}, status_code=405, headers={"Allow": ", ".join(methods)})


async def _redis_down(request: Request, error: Exception) -> JSONResponse:
    log.warning("redis unreachable while serving %s %s: %s", request.method, request.url.path, error)
    return _unavailable(request, "the job queue (Redis) is unreachable; retry later")


async def _redis_full(request: Request, error: Exception) -> JSONResponse:
    """Redis refused a write at its maxmemory: nothing of the request was stored (each write is one atomic step)."""
    log.warning("redis full (maxmemory) while serving %s %s: %s", request.method, request.url.path, error)
    return _unavailable(request, REDIS_FULL)


def _unavailable(request: Request, detail: str) -> JSONResponse:
    retry_after = request.app.state.settings.retry_after_seconds
    return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": str(retry_after)})


class _Server(uvicorn.Server):
    """uvicorn's server, remembering a Ctrl-C: the SIGINT it raises again as it exits is swallowed by asyncio's
    runner, and the command line's status for a Ctrl-C is 130."""

    interrupted = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.interrupted = self.interrupted or sig == signal.SIGINT
        super().handle_exit(sig, frame)


def serve(host: str, port: int) -> None:
    settings = load(ApiSettings)
    logs.configure(settings.log_format)
    if traces := tracing.setup("gift-api", settings.otlp_endpoint):
        log.info("traces go to %s over OTLP/HTTP", traces)
    app = create_app(settings)
    # log_config=None: uvicorn's own warnings go through the handler above, in the same format
    server = _Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, log_config=None))
    app.state.server = server
    server.run()
    if server.interrupted:
        raise KeyboardInterrupt
