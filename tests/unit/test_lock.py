"""requirements/ must agree with pyproject.toml: `make lock` writes it, these checks catch a lock left stale."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements"
ROLES = ["client", "api", "worker", "trainer"]
LOCAL = {"gift", "gift-tinyworld"}
HEAVY = {"torch", "torchvision", "diffusers", "transformers", "open-clip-torch", "triton"}

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
HASH = re.compile(r"--hash=(sha256:[0-9a-f]{64})")


def read_lock(path: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """Each pinned package of a compiled file: its version and the hashes of its files."""
    entries: dict[str, tuple[str, frozenset[str]]] = {}
    for block in re.split(r"\n(?=\S)", path.read_text()):
        pin = PIN.match(block)
        if pin:
            entries[canonicalize_name(pin[1])] = (pin[2], frozenset(HASH.findall(block)))
    return entries


def declared() -> list[Requirement]:
    """Every dependency of both distributions, base and extras, except the projects themselves."""
    found = []
    for pyproject in (ROOT / "pyproject.toml", ROOT / "plugins" / "tinyworld" / "pyproject.toml"):
        project = tomllib.loads(pyproject.read_text())["project"]
        specs = [
            *project["dependencies"],
            *(s for extra in project.get("optional-dependencies", {}).values() for s in extra),
        ]
        found += [r for r in map(Requirement, specs) if canonicalize_name(r.name) not in LOCAL]
    return found


LOCK = read_lock(REQUIREMENTS / "lock.txt")


def test_every_locked_package_is_pinned_with_hashes():
    assert LOCK and all(hashes for _, hashes in LOCK.values())


def test_every_declared_dependency_is_locked_within_its_range():
    locked = {r.name: LOCK[canonicalize_name(r.name)][0] for r in declared() if canonicalize_name(r.name) in LOCK}
    stale = [
        f"{r} (locked: {locked.get(r.name, 'not at all')})"
        for r in declared()
        if r.name not in locked or locked[r.name] not in r.specifier
    ]
    assert not stale, f"pyproject.toml changed after the lock; run `make lock`: {stale}"


@pytest.mark.parametrize("role", ROLES)
def test_role_file_is_the_lock_projected(role):
    entries = read_lock(REQUIREMENTS / f"{role}.txt")
    differing = {name: entry for name, entry in entries.items() if LOCK.get(name) != entry}
    assert entries and not differing, f"{role}.txt differs from lock.txt; run `make lock`: {sorted(differing)}"


@pytest.mark.parametrize("role", ["client", "api"])
def test_light_roles_install_no_torch(role):
    assert not HEAVY & set(read_lock(REQUIREMENTS / f"{role}.txt"))
