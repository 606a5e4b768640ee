"""Registries of named extensions, filled from built-ins and from installed distributions' entry points.

A plugin is a distribution that names objects in entry-point groups (as open_clip and timm find their models), so
the code that uses an extension never imports the package that provides it: the trainer knows no dataset but by
its registered name, and a worker finds its default model the same way. Entry points are loaded when first asked
for, so an installed plugin costs nothing until a config names it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

from gift_common.errors import UserError

T = TypeVar("T")


class UnknownName(ValueError):
    """A name nothing registered; the message lists what is registered."""


class Registry(Generic[T]):
    """Named objects of one kind: the built-ins given here, then the entry points of ``group``."""

    def __init__(self, group: str, kind: str, builtins: Mapping[str, T] | None = None) -> None:
        self.group, self.kind = group, kind
        self._builtins: dict[str, T] = dict(builtins or {})
        self._loaded: dict[str, T] = {}
        self._entry_points: dict[str, EntryPoint] | None = None

    def register(self, name: str, obj: T) -> None:
        """Add an object by hand (a test, or a program that embeds the trainer)."""
        self._builtins[name] = obj

    def names(self) -> list[str]:
        return sorted({*self._builtins, *self._plugins()})

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def get(self, name: str) -> T:
        if name in self._builtins:
            return self._builtins[name]
        if name not in self._loaded:
            entry = self._plugins().get(name)
            if entry is None:
                known = ", ".join(self.names()) or "none"
                raise UnknownName(f"unknown {self.kind} {name!r}; registered: {known}")
            self._loaded[name] = _load(entry, self.kind)
        return self._loaded[name]

    def items(self) -> list[tuple[str, T]]:
        return [(name, self.get(name)) for name in self.names()]

    def _plugins(self) -> dict[str, EntryPoint]:
        if self._entry_points is None:
            self._entry_points = {entry.name: entry for entry in find_entry_points(self.group)}
        return self._entry_points


def _load(entry: EntryPoint, kind: str) -> Any:  # whatever the plugin names: the registry's type is a promise
    try:
        return entry.load()
    except Exception as error:  # an installed plugin that cannot load is the user's to fix, not a traceback
        raise UserError(
            f"{kind} {entry.name!r} is registered by {entry.value!r}, which failed to load: {error}"
        ) from error


def _installed_entry_points(group: str) -> list[EntryPoint]:
    return list(entry_points(group=group))


# Where entry points come from; tests replace it to see the code as it runs without a plugin installed.
find_entry_points: Callable[[str], list[EntryPoint]] = _installed_entry_points
