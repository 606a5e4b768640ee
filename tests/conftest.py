"""Suite-wide options: ``--without-tinyworld`` runs the tests as they run where the tiny world is not installed.

The embedded world is a plugin (plugins/tinyworld): the trainer and the generator must work without it. With the
option, importing ``tinyworld`` fails and its entry points are not found, as in an environment that never
installed it, and tests marked ``tinyworld`` (they need it) are left out.
"""

from __future__ import annotations

import sys
from importlib.abc import MetaPathFinder
from importlib.metadata import EntryPoint

import pytest

from gift_common import plugins

pytest_plugins = ["services.testing.fixtures"]
HIDDEN = "tinyworld"


class _Absent(MetaPathFinder):
    def find_spec(self, name: str, path: object, target: object = None) -> None:
        if name == HIDDEN or name.startswith(HIDDEN + "."):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by --without-tinyworld)", name=name)
        return None


def _visible(find: object) -> object:
    def entry_points(group: str) -> list[EntryPoint]:
        return [entry for entry in find(group) if not entry.value.startswith(HIDDEN)]  # type: ignore[operator]

    return entry_points


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--without-tinyworld", action="store_true", help="run as if the tiny world were not installed")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "tinyworld: needs the tiny world plugin (left out by --without-tinyworld)")
    if config.getoption("--without-tinyworld"):
        for name in [n for n in sys.modules if n == HIDDEN or n.startswith(HIDDEN + ".")]:
            del sys.modules[name]
        sys.meta_path.insert(0, _Absent())
        plugins.find_entry_points = _visible(plugins.find_entry_points)  # type: ignore[assignment]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--without-tinyworld"):
        skip = pytest.mark.skip(reason="needs the tiny world, hidden by --without-tinyworld")
        for item in items:
            if "tinyworld" in item.keywords:
                item.add_marker(skip)
