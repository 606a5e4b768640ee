"""ASGI middleware: request ids, the request body limit and the API's own request metrics."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.generator import logs, tracing

API_REGISTRY = CollectorRegistry()
REQUEST_SECONDS = Histogram(
    "gift_api_request_seconds",
    "Time to answer an HTTP request",
    ["method", "route", "status"],
    registry=API_REGISTRY,
)


REQUEST_ID_HEADER = "X-Request-ID"
_PLAIN_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # a caller's id that is safe to log and send back


class RequestIds:
    """Give each request an id, which every log line about it carries (logs.py), the jobs it creates keep, and the
    answer's ``X-Request-ID`` header returns: the caller's own ``X-Request-ID`` when it is a plain token of at most
    64 characters (a proxy's id then follows the request), else a new one."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = dict(scope["headers"]).get(REQUEST_ID_HEADER.lower().encode(), b"").decode("latin-1")
        request_id = sent if _PLAIN_ID.fullmatch(sent) else uuid.uuid4().hex

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (REQUEST_ID_HEADER.lower().encode(), request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        tracing.annotate(request_id=request_id)  # on the request's span, which the framework opened (main.py)
        with logs.bound(request_id=request_id):
            await self.app(scope, receive, send_with_id)


class BodySizeLimit:
    """Refuse bodies over ``max_bytes`` (``by_path[path]``'s limit and setting where given: an upload's) with 413:
    by Content-Length, or by reading a chunked body first.

    A chunked body is read here (never more than the limit) and replayed to the app, so that the refusal
    happens before any route sees a partial body.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, by_path: Mapping[str, tuple[int, str]] | None = None):
        self.app, self.max_bytes, self.by_path = app, max_bytes, by_path or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self.by_path.get(scope["path"], (self.max_bytes, "GIFT_MAX_BODY_BYTES"))
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > limit:
                await self._refuse(send, limit, setting)
            else:
                await self.app(scope, receive, send)
            return
        messages, received = [], 0
        while True:
            message = await receive()
            messages.append(message)
            received += len(message.get("body", b""))
            if received > limit:
                await self._refuse(send, limit, setting)
                return
            if message["type"] != "http.request" or not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, limit: int, setting: str) -> None:
        body = json.dumps({"detail": f"request body: larger than this server's limit of {limit} bytes ({setting})"})
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})


class RequestMetrics:
    """Observe each request's latency, labelled by its route template (not its raw path)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            REQUEST_SECONDS.labels(scope["method"], route, str(status)).observe(time.perf_counter() - start)
