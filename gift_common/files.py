"""Files that a reader, or a process killed while writing them, sees whole or not at all."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_file(path: Path, *, durable: bool = False) -> Iterator[BinaryIO]:
    """A binary file to write `path`'s new content into; on a clean exit it replaces `path` in one rename, on an
    error the temporary file goes and `path` is untouched. `durable` also flushes the file to disk before the
    rename (and the rename after it), so that a power loss cannot leave the name pointing at unwritten blocks:
    for checkpoints, whose loss costs hours; a cache that can be refilled does without the cost."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")  # one per writer, threads and processes alike
    try:
        with tmp.open("xb") as file:
            yield file
            if durable:
                file.flush()
                os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_folder(path.parent)


def atomic_write(path: Path, data: bytes, *, durable: bool = False) -> None:
    """Write `data` to `path` through `atomic_file`."""
    with atomic_file(path, durable=durable) as file:
        file.write(data)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
