"""Atomic files: a reader, or a process killed mid-write, sees the old content or the whole new one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gift_common.files import atomic_file, atomic_write


def test_a_write_replaces_the_file_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "metrics.json"
    atomic_write(path, b"old")
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]


def test_a_failed_write_keeps_the_old_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    atomic_write(path, b"previous checkpoint")
    with pytest.raises(RuntimeError, match="killed"), atomic_file(path) as file:
        file.write(b"half of the new")
        raise RuntimeError("killed while saving")
    assert path.read_bytes() == b"previous checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_a_durable_write_reaches_the_disk_before_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, synced = tmp_path / "checkpoint.pt", []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(path.exists())  # the file is synced while the name still points at nothing
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    atomic_write(path, b"weights", durable=True)
    assert synced == [False, True]  # the file before the rename, then its folder after it
    atomic_write(tmp_path / "cache.png", b"png")
    assert len(synced) == 2  # a plain write does without
