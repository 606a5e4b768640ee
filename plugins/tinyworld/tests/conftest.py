"""The tiny world's tests use the project's shared fixtures; from the repository's root, `pytest` collects them too
(testpaths), with the suite's options (tests/conftest.py): `--without-tinyworld` leaves them out, as all need it."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["services.testing.fixtures"]


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    return True if config.getoption("--without-tinyworld", default=False) else None
