"""A run config as written, before it is checked: a YAML file that may extend another, with changes on top.

`base: FILE|NAME` names the config a file extends: a file relative to the extending file's folder, or a shipped
config's name. The extending file's mappings merge into the base's key by key; anything else it sets (a list such as
`tasks`, a value) replaces the base's. `--set KEY.PATH=VALUE` then changes one key of the result (a list item by its
position, `tasks.0.lr`), VALUE read as YAML (`1e-5`, `true`, `[0.9, 0.99]`). Relative paths, whichever file of the
chain they come from, are read against the folder of the config the run names (a shipped name's: the current
directory), as if the whole config had been written there. config.py checks the result; nothing here loads torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from gift_common.errors import UserError
from services.trainer import configs as shipped_configs

BASE_KEY = "base"


def compose(path_or_name: str | Path, overrides: Sequence[str] = ()) -> tuple[Any, Path]:
    """The config's data, its bases merged in and the overrides applied, and the folder its relative paths start
    from."""
    path, folder = find_config(path_or_name)
    data = _read_chain(path, ())
    for override in overrides:
        data = apply_override(data, override)
    return data, folder


def find_config(path_or_name: str | Path) -> tuple[Path, Path]:
    """The config's file and the folder its relative paths start from: a file's own folder, or, for the name of a
    shipped config that is no file here, the current directory."""
    path = Path(path_or_name)
    if not path.exists() and str(path_or_name) in shipped_configs.names():
        return shipped_configs.path(str(path_or_name)), Path.cwd()
    if not path.exists() and path.suffix == "" and len(path.parts) == 1:
        shipped = ", ".join(shipped_configs.names())
        raise UserError(f"cannot read config {path}: no such file, nor a shipped config of that name ({shipped})")
    return path, path.resolve().parent


def read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except OSError as error:
        raise UserError(f"cannot read config {path}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from None


def _read_chain(path: Path, extending: tuple[Path, ...]) -> Any:
    """The file's data merged over its base's, and so on down the chain."""
    if path.resolve() in extending:
        chain = " -> ".join(str(p) for p in (*extending, path.resolve()))
        raise UserError(f"{path}: base: the configs extend each other in a loop ({chain})")
    data = read_yaml(path)
    if not isinstance(data, dict) or BASE_KEY not in data:
        return data
    data = dict(data)
    name = data.pop(BASE_KEY)
    if not isinstance(name, str) or not name:
        raise UserError(f"{path}: base: a config file or a shipped config's name, not {name!r}")
    base_path = _base_file(name, path)
    base = _read_chain(base_path, (*extending, path.resolve()))
    if not isinstance(base, dict):
        raise UserError(f"{base_path}: the config must be a mapping of keys to values, not {type(base).__name__}")
    return merge(base, data)


def _base_file(name: str, extending: Path) -> Path:
    """A file beside the extending config, else the shipped config of that name."""
    candidate = extending.parent / Path(name).expanduser()
    if candidate.exists():
        return candidate
    if name in shipped_configs.names():
        return shipped_configs.path(name)
    shipped = ", ".join(shipped_configs.names())
    raise UserError(f"{extending}: base: {candidate} is no file, nor {name!r} a shipped config ({shipped})")


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` on top: mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in changes.items():
        old = merged.get(key)
        merged[key] = merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return merged


def apply_override(data: Any, override: str) -> Any:
    """`data` with `KEY.PATH=VALUE` set; a missing key is added (the schema then says whether it exists)."""
    key, sep, text = override.partition("=")
    parts = key.split(".")
    if not sep or not all(parts):
        raise UserError(f"--set {override}: expected KEY.PATH=VALUE, e.g. training.lr=1e-5")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UserError(f"--set {key}: the value is not valid YAML: {' '.join(str(error).split())}") from None
    return _set(data, parts, value, key)


def _set(node: Any, parts: list[str], value: Any, key: str) -> Any:
    """A copy of `node` with the value at `parts` replaced (the data read from files stays as it was)."""
    if not parts:
        return value
    head, rest = parts[0], parts[1:]
    if isinstance(node, list):
        if not head.isdigit() or int(head) >= len(node):
            raise UserError(f"--set {key}: no item {head} in a list of {len(node)} (items count from 0)")
        changed = list(node)
        changed[int(head)] = _set(node[int(head)], rest, value, key)
        return changed
    if isinstance(node, dict):
        return {**node, head: _set(node.get(head, {} if rest else None), rest, value, key)}
    raise UserError(f"--set {key}: {head!r} is inside a value ({node!r}), not a mapping or list")
