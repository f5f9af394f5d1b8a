"""Check the built site's internal links: every relative ``href``/``src`` in every HTML page must
resolve to a file of the build, and every ``#fragment`` to an ``id`` (or ``name``) in its page.

Sphinx's own ``linkcheck`` needs the network for external links; this checker needs nothing
and runs after every ``make docs``.  External links (with a scheme) are not checked.

    python docs/check_links.py docs/_build/html
"""

from __future__ import annotations

import sys
from functools import cache
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

LINK_ATTRS = {"href", "src"}


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []   # (tag, url)
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if value is None:
                continue
            if key in LINK_ATTRS:
                self.links.append((tag, value))
            elif key == "id" or (key == "name" and tag == "a"):
                self.ids.add(value)


@cache
def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8", errors="replace"))
    return page


def _broken(page: Path, url: str, root: Path) -> str | None:
    """Why ``url`` on ``page`` does not resolve, or None."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or url.startswith(("mailto:", "javascript:", "data:")):
        return None
    target = page if not parts.path else (page.parent / unquote(parts.path)).resolve()
    if parts.path.endswith("/") or target.is_dir():
        target = target / "index.html"
    if root not in target.parents and target != root:
        return f"points outside the site ({target})"
    if not target.is_file():
        return "no such file"
    if parts.fragment and target.suffix == ".html":
        if unquote(parts.fragment) not in _parse(target).ids:
            return f"no id {parts.fragment!r} in {target.relative_to(root)}"
    return None


def check(root: str | Path) -> list[str]:
    """One line per broken internal link in the HTML under ``root``."""
    root = Path(root).resolve()
    problems = []
    for page in sorted(root.rglob("*.html")):
        for tag, url in _parse(page).links:
            why = _broken(page, url, root)
            if why:
                problems.append(f"{page.relative_to(root)}: <{tag}> {url}: {why}")
    return problems


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else "docs/_build/html")
    if not (root / "index.html").is_file():
        print(f"error: {root} holds no built site (run `make docs`)", file=sys.stderr)
        return 2
    problems = check(root)
    pages = sum(1 for _ in root.rglob("*.html"))
    for line in problems:
        print(line, file=sys.stderr)
    print(f"internal links: {pages} pages checked, {len(problems)} broken")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
