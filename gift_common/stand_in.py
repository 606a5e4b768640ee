"""Stand-in markers: weights written with random values for rehearsals, tests and the GPU check, never results.

A stand-in directory holds ``STAND_IN.json``; a stand-in weights file has a sidecar ``<file>.STAND_IN.json``.
Whatever reports on a run checks ``is_stand_in`` for each model it used and says so in its first line, so that no
figure made on random weights can pass for a result.
"""

from __future__ import annotations

import json
from pathlib import Path

MARKER = "STAND_IN.json"
NOTICE = "STAND-IN WEIGHTS (random, untrained): these figures measure the machinery, not the method"


def marker_path(path: Path) -> Path:
    """Where the marker of ``path`` lives: inside a directory, beside a file."""
    path = Path(path)
    return path / MARKER if path.is_dir() else path.with_name(f"{path.name}.{MARKER}")


def write_marker(path: Path, what: str) -> Path:
    """Mark ``path`` (an existing directory or file) as a stand-in; ``what`` says what it stands in for."""
    target = marker_path(path)
    target.write_text(json.dumps({"stand_in": True, "what": what, "weights": "random"}, indent=2) + "\n")
    return target


def is_stand_in(path: Path | str | None) -> bool:
    """True when ``path`` or a folder above it (a model file inside a marked directory) carries a marker."""
    if path is None:
        return False
    path = Path(path)
    return marker_path(path).is_file() or any((parent / MARKER).is_file() for parent in path.parents[:3])
