"""SHA-256 manifests of shipped weight files, checked whenever such a file is loaded.

A weights folder may hold ``MANIFEST.json`` (``{"files": {"<relative path>": "<sha256>"}}``). Loading a file or a
model folder beneath it first checks every listed file under that path, so a truncated download or a half-finished
rebuild is a clear error instead of a model that quietly computes something else.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from gift_common.errors import UserError
from gift_common.files import atomic_write

MANIFEST = "MANIFEST.json"
SEARCH_DEPTH = 3  # how many folders above a loaded path may hold its manifest


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(paths: Iterable[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        found += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return found


def write_manifest(root: Path, paths: Iterable[Path]) -> Path:
    """List every file under ``paths`` (files or folders inside ``root``) with its SHA-256; written atomically."""
    files = {str(p.relative_to(root)): sha256_file(p) for p in _files(paths)}
    target = root / MANIFEST
    atomic_write(target, (json.dumps({"files": files}, indent=1, sort_keys=True) + "\n").encode())
    return target


def find_manifest(path: Path) -> Path | None:
    """The nearest MANIFEST.json in ``path`` (a folder) or the folders above it, up to SEARCH_DEPTH levels."""
    path = path.resolve()
    for folder in [path, *path.parents][: SEARCH_DEPTH + 1]:
        if (folder / MANIFEST).is_file():
            return folder / MANIFEST
    return None


def verify(path: Path) -> int:
    """Check every manifest-listed file at or under ``path``; returns how many were checked (0: no manifest).

    Raises UserError naming the first file that is missing or whose bytes differ.
    """
    manifest = find_manifest(path)
    if manifest is None:
        return 0
    root, target = manifest.parent, path.resolve()
    try:
        listed = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{manifest}: not a weights manifest ({{'files': {{path: sha256}}}})") from None
    checked = 0
    for name, expected in sorted(listed.items()):
        file = root / name
        if file != target and target not in file.parents:
            continue
        if not file.is_file():
            raise UserError(f"{file} is listed in {manifest} but missing: rebuild or restore the weights")
        if sha256_file(file) != expected:
            raise UserError(f"{file} does not match its SHA-256 in {manifest}: the file is damaged or was replaced")
        checked += 1
    return checked
