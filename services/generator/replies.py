"""Redis replies narrowed to the types the generator's clients return at run time.

redis-py types a reply for every client and protocol at once: text as ``bytes | str``, a stream read as RESP2 lists
or RESP3 maps. The generator opens its clients in RESP2, one that decodes replies to text and one for PNG bytes
that does not (``api/main.py``, ``worker/main.py``). These functions narrow a reply where it arrives, so the code
after them is typed; a client opened otherwise fails here with an error that says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypedDict

Entry = tuple[str, dict[str, str]]  # a stream entry: its id and its fields


class Pending(TypedDict):
    """One entry of an XPENDING range reply, as redis-py parses it."""

    message_id: str
    consumer: str
    time_since_delivered: int
    times_delivered: int


def text(reply: object) -> str:
    """A reply that is text; None (a missing key or field) and bytes are errors."""
    if isinstance(reply, str):
        return reply
    raise TypeError(
        f"expected text from a Redis client that decodes replies (decode_responses=True), got {reply!r:.60}"
    )


def optional_text(reply: object) -> str | None:
    """A reply that is text, or None for a missing key or field."""
    return None if reply is None else text(reply)


def texts(reply: Iterable[object]) -> list[str]:
    """A list reply of text (ZRANGE without scores, HKEYS, LRANGE)."""
    return [text(item) for item in reply]


def optional_texts(reply: Iterable[object]) -> list[str | None]:
    """A list reply of text with None for each missing key or field (MGET, HMGET)."""
    return [optional_text(item) for item in reply]


def text_hash(reply: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    """A hash reply (HGETALL, a stream entry's fields) of text."""
    return {text(name): text(value) for name, value in reply.items()}


def data(reply: object) -> bytes | None:
    """A reply of the bytes client: the value's bytes, or None for a missing key."""
    if reply is None or isinstance(reply, bytes):
        return reply
    raise TypeError(f"expected bytes from a Redis client that does not decode replies, got {type(reply).__name__}")


def entries(reply: Iterable[object]) -> list[Entry]:
    """The entries of a stream reply (XCLAIM, XAUTOCLAIM, one stream of XREADGROUP) that still have their fields:
    an entry deleted after its delivery comes back without them."""
    found: list[Entry] = []
    for entry in reply:
        match entry:
            case (entry_id, dict() as fields) if fields:
                found.append((text(entry_id), text_hash(fields)))
            case (_, dict() | None):
                continue
            case _:
                raise TypeError(f"expected a stream entry (id, fields) from Redis, got {entry!r:.60}")
    return found


def group_read(reply: object) -> list[Entry]:
    """The entries of an XREADGROUP reply in RESP2 (``[[stream, entries], ...]``), of all its streams in order."""
    if not isinstance(reply, list):
        raise TypeError(f"expected a RESP2 XREADGROUP reply (a list of streams), got {type(reply).__name__}")
    return [entry for _, stream in reply for entry in entries(stream)]
