"""Atomic files: a reader, or a process killed mid-write, sees the old content or the whole new one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gift_common.files import atomic_file, atomic_write, remove_orphans


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


def test_the_half_written_file_of_a_killed_writer_can_be_removed(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    atomic_write(path, b"last whole checkpoint")
    writing = atomic_file(path)
    writing.__enter__().write(b"half of the next")  # and the process is killed: no exit, no clean-up
    (tmp_path / ".checkpoint.pt.old.json").write_bytes(b"not ours")
    (tmp_path / ".metrics.json.0a1b2c.tmp").write_bytes(b"another file's")
    assert [p.name.startswith(".checkpoint.pt.") for p in remove_orphans(path)] == [True]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".checkpoint.pt.old.json", ".metrics.json.0a1b2c.tmp",
                                                           "checkpoint.pt"]  # fmt: skip
    assert path.read_bytes() == b"last whole checkpoint"
