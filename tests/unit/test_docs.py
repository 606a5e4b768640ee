"""The project's documents hold together: links resolve, the citation file is valid, generated pages are current."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([*ROOT.glob("*.md"), *ROOT.glob("docs/**/*.md"), *ROOT.glob("plugins/*/*.md"), *ROOT.glob("bench/*.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens, repeats numbered."""
    found: set[str] = set()
    counts: dict[str, int] = {}
    for heading in re.findall(r"^#+\s+(.*)$", FENCE.sub("", page.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        counts[slug] = counts.get(slug, 0) + 1
        found.add(slug if counts[slug] == 1 else f"{slug}-{counts[slug] - 1}")
    return found


def relative_links(page: Path) -> list[str]:
    """Links to files of the repository (a bare #anchor is the page's own); web addresses are not checked."""
    return [t for t in LINK.findall(FENCE.sub("", page.read_text())) if not re.match(r"[a-z]+:", t)]


def test_the_link_check_reads_links_and_anchors(tmp_path: Path) -> None:
    page = tmp_path / "a.md"
    page.write_text("# Où est `x`?\n## Two\n## Two\n[b](b.md#c) [web](https://x.org) [self](#two-1)\n")
    assert relative_links(page) == ["b.md#c", "#two-1"]
    assert {"où-est-x", "two", "two-1"} <= anchors(page)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_citation_file_is_valid_cff_citing_the_paper_and_the_software() -> None:
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert citation["cff-version"] == "1.2.0"
    for key in ("message", "title", "authors"):  # CFF 1.2.0's required keys
        assert citation.get(key), key
    assert (citation["version"], citation["license"]) == (project["version"], project["license"])
    paper = citation["preferred-citation"]
    assert paper["type"] == "conference-paper" and "GIFT" in paper["title"] and paper["year"] == 2025
    for author in [*citation["authors"], *paper["authors"]]:
        assert author.get("family-names") or author.get("name"), author
    assert paper["authors"][0]["family-names"] == "Wu"


def test_configuration_page_is_the_schema_rendered() -> None:
    from services.trainer.config_doc import render

    stale = "docs/configuration.md is stale; python -m services.trainer.config_doc > docs/configuration.md"
    assert (ROOT / "docs" / "configuration.md").read_text() == render(), stale


def test_configuration_page_names_every_key_of_every_section() -> None:
    from services.trainer.config import FilterConfig, RunConfig
    from services.trainer.config_doc import render

    page = render()
    for section, field in RunConfig.model_fields.items():
        assert f"| `{section}` |" in page
        model = field.annotation.__args__[0] if section == "tasks" else field.annotation
        for key in getattr(model, "model_fields", {}):
            assert f"| `{section}{'[]' if section == 'tasks' else ''}.{key}` |" in page, (section, key)
    for key in FilterConfig.model_fields:  # a mapping within a section has its own table
        assert f"| `synthetic.filter.{key}` |" in page, key
