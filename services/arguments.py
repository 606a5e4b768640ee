"""The command line's shared argument types and help layout, for `gift`'s commands wherever they are defined."""

from __future__ import annotations

import argparse
from pathlib import Path


def positive(text: str) -> int:
    value = int(text) if text.strip().isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def folder(text: str) -> Path:
    """A folder to write into: it may not exist yet, but it may not be a file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a folder")
    return path


class Help(argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of descriptions and examples."""


def explain(
    parser: argparse.ArgumentParser, about: str, example: str, formatter: type[Help] = Help
) -> argparse.ArgumentParser:
    """What a command does and an example of it, for its --help."""
    parser.description, parser.epilog, parser.formatter_class = about, f"example:\n{example}", formatter
    return parser
