"""The log lines of the API and the workers: plain text for a terminal, or one JSON object a line for a collector.

A JSON line carries the ids of what it is about, so that one job can be followed across processes: the request that
created it (``request_id``), its ``tenant``, its ``job_id`` (``job_ids`` for a pipeline call of several jobs), the
``worker_id`` of the worker that wrote it, and with tracing on the ``trace_id`` and ``span_id`` of the span in hand.
The ids live in a context variable, so each request (an asyncio task) and each worker step carries its own; a worker's
id is the same for the whole process.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal

from services.generator import tracing

FIELDS = ("request_id", "tenant", "job_id", "job_ids", "worker_id")  # the ids a line may carry, in this order
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

Value = str | list[str]
_context: ContextVar[dict[str, Value]] = ContextVar("gift_log_context")  # each value a new dict, never changed
_process: dict[str, Value] = {}  # ids of the whole process (a worker's id)


def add(**fields: Value | None) -> None:
    """Give the lines logged from here on in this context (a request's task, a worker step) these ids; None leaves an
    id as it was."""
    _context.set(_with(fields))


@contextmanager
def bound(**fields: Value | None) -> Iterator[None]:
    """These ids on the lines logged inside the block, and the ids before it after it."""
    token = _context.set(_with(fields))
    try:
        yield
    finally:
        _context.reset(token)


def _with(fields: dict[str, Value | None]) -> dict[str, Value]:
    """The ids in context with ``fields`` over them (None: left as it was), as a new dict."""
    return {**_context.get({}), **{name: value for name, value in fields.items() if value is not None}}


def current(name: str) -> str | None:
    """The id ``name`` (``request_id``, ``tenant``, ...) that lines logged here carry, or None."""
    value = {**_process, **_context.get({})}.get(name)
    return value if isinstance(value, str) else None


def set_process_fields(**fields: Value) -> None:
    """Ids every line of this process carries (a worker's id), whatever its thread."""
    _process.update(fields)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC), level, logger, message, the ids in context, and an exception's trace."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ids = {**_process, **_context.get({})}
        line.update((name, ids[name]) for name in FIELDS if name in ids)
        line.update(tracing.log_ids())
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure(log_format: Literal["text", "json"]) -> None:
    """Log INFO and above to standard error in ``log_format``; httpx's own INFO lines stay out (each quotes a URL,
    and a webhook's may hold a user:password)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)
