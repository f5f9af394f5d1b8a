"""Every relative link in README.md, benchmarks/README.md and docs/guide/*.md resolves inside
the repository (issue 19, item 9), and the options page is the one the code generates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = ["README.md", "benchmarks/README.md", "docs/guide/reference.md", "docs/guide/options.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def relative_links(page: Path) -> list[str]:
    """The targets of ``[text](target)`` and ``![alt](target)`` that are not URLs or anchors."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)  # not code
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:|#", t)]


@pytest.mark.parametrize("name", PAGES)
def test_every_relative_link_resolves_inside_the_repository(name):
    page = ROOT / name
    links = relative_links(page)
    assert name != "README.md" or len(links) >= 5  # the guide does link to its references
    for target in links:
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(ROOT), f"{name}: {target} leaves the repository"
        assert path.exists(), f"{name}: {target} does not exist"


def test_the_link_check_sees_a_broken_link(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("[a](missing.md) [b](https://x.org) [c](#top)\n```\n[d](in-code.md)\n```\n")
    assert relative_links(page) == ["missing.md"]


def test_readme_is_a_short_guide():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 300


def test_the_options_page_is_generated_from_the_declarations():
    from resnetlab.engine.config import options_page

    page = (ROOT / "docs/guide/options.md").read_text(encoding="utf-8")
    assert page == options_page(), "regenerate: python -m resnetlab.engine.config > docs/guide/options.md"
