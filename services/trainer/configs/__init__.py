"""The run configs shipped with the trainer, as package data: MTIL Order I and II, and the embedded default."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

# Installed packages are plain folders (setuptools unpacks wheels), so the configs are files a run can name.
DIRECTORY = Path(str(files(__name__)))


def names() -> list[str]:
    """Every shipped config's name: its file name without `.yaml`."""
    return sorted(path.stem for path in DIRECTORY.glob("*.yaml"))


def path(name: str) -> Path:
    """The file of the shipped config `name` (it may not exist: callers check)."""
    return DIRECTORY / f"{name}.yaml"
