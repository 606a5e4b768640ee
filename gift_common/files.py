"""Files that a reader, or a process killed while writing them, sees whole or not at all."""

from __future__ import annotations

import glob
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
    # One per writer, threads and processes alike, in the pattern `remove_orphans` looks for.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
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


def remove_orphans(path: Path) -> list[Path]:
    """Remove the temporary files of writes to `path` that a killed process left (a checkpoint's can be GBs); only
    for a path that no live process is writing. Returns what went."""
    orphans = list(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))
    for orphan in orphans:
        orphan.unlink(missing_ok=True)
    return orphans


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
