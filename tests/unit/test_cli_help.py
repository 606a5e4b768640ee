"""Every `gift` command's --help says what it does and shows an example; `gift train --help` lists the presets."""

from __future__ import annotations

import argparse
import subprocess
import sys

from services.cli import build_parser
from services.trainer.presets import PRESETS


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, argparse.ArgumentParser]]:
    """Every parser of the command tree, by its words after `gift`."""
    found = [(" ".join(path), parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += commands(sub, (*path, name))
    return found


def test_every_command_says_what_it_does_with_an_example() -> None:
    tree = commands(build_parser())
    assert {name for name, _ in tree} >= {"", "train", "demo", "generator serve", "generator worker", "rehearsal run"}
    for name, parser in tree:
        text = parser.format_help()
        assert parser.description and len(parser.description) > 60, name
        assert "example:\n  gift " in text or "example:\n  GIFT_" in text, name
        options = [action for action in parser._actions if not isinstance(action, argparse._SubParsersAction)]
        for action in options:  # a command's own words are in its parent's list
            assert action.help or action.dest == "config", (name, action.dest)  # --config: in the description


def test_gift_help_is_for_users_not_an_implementation_note() -> None:
    text = build_parser().format_help()
    assert "imported only when it runs" not in text and "console script" not in text
    assert "gift demo" in text and "gift train --config" in text


def test_train_help_lists_every_method_preset() -> None:
    text = subprocess.run(
        [sys.executable, "-m", "services.cli", "train", "--help"], capture_output=True, text=True, check=True
    ).stdout
    listed = text.split("method presets", 1)[1].split("\n")[1]
    assert [name.strip() for name in listed.split(",")] == list(PRESETS)
    assert "{presets}" not in text


def test_parsing_a_command_does_not_load_the_presets_module() -> None:
    """The API's command must not import torch: the presets are read only when help is printed."""
    code = "import sys; from services.cli import build_parser; build_parser().parse_args(['generator', 'serve']);"
    code += "print('services.trainer.methods' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
