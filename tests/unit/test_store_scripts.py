"""The job model's Lua scripts, read from services/generator/lua/ once: each file is used, flags lines come first."""

from __future__ import annotations

from pathlib import Path

from services.generator import store

LUA = Path(store.__file__).with_name("lua")
SCRIPTS = {name: text for name, text in vars(store).items() if isinstance(text, str) and "redis.call(" in text}


def test_every_lua_file_is_in_a_script_and_no_script_is_written_in_python() -> None:
    files = {path.stem: path.read_text() for path in LUA.glob("*.lua")}
    assert len(files) == 13 and len(SCRIPTS) == 10
    for name, text in files.items():
        code = text.split("\n", 1)[1] if text.startswith("#!lua") else text
        assert any(code in script for script in SCRIPTS.values()), f"lua/{name}.lua is in no script"
    source = Path(store.__file__).read_text()
    assert "redis.call(" not in source


def test_a_flags_line_is_the_first_line_of_its_script_and_only_there() -> None:
    assert store.END_JOB.startswith("#!lua flags=allow-oom\n")
    assert store.READ_JOB.startswith("#!lua flags=no-writes\n")
    assert store.LIST_PAGE.startswith("#!lua flags=no-writes\n")
    assert store.END_ADAPTATION.startswith("#!lua flags=allow-oom\n")
    assert sum("#!lua" in script for script in SCRIPTS.values()) == 4
    assert all(script.count("#!lua") <= 1 for script in SCRIPTS.values())
