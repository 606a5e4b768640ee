"""docs/API.md is the contract other tools are written against: its tables must say what the code serves."""

from __future__ import annotations

import re
from pathlib import Path

from gift_common.schemas import JobRequest
from gift_common.settings import Settings
from services.generator.api.main import create_app

PAGE = (Path(__file__).parents[2] / "docs" / "API.md").read_text()


def _section(title: str) -> str:
    return PAGE.split(f"\n{title}\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]


def _first_column(text: str) -> list[str]:
    return [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| `")]


def test_the_routes_table_lists_exactly_the_served_routes():
    served = {f"{method.upper()} {path}" for path, ops in create_app().openapi()["paths"].items() for method in ops}
    documented = {cell.strip("`") for cell in _first_column(_section("### Routes"))}
    assert documented == served


def test_the_environment_tables_list_exactly_the_settings():
    environment = PAGE.split("\n## Environment\n", 1)[1].split("\n## HTTP\n", 1)[0]
    documented = {cell.strip("`") for cell in _first_column(environment)}
    assert documented == {f"GIFT_{name.upper()}" for name in Settings.model_fields}


def test_the_request_table_lists_exactly_the_request_fields():
    cells = _first_column(_section("### `POST /v1/jobs`"))
    documented = {name for cell in cells for name in re.findall(r"`(\w+)`", cell)}
    assert documented == set(JobRequest.model_fields)
