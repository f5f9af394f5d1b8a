"""The CLI reference, generated from the commands themselves so it cannot drift.

``.. resnetlab-cli::`` walks ``resnetlab.cli.app``'s click tree (typer builds one) and renders,
for every command and command group, a section holding its ``--help`` text exactly as a user
sees it in a 100-column terminal.  New commands appear without touching the docs.

``commands()`` and ``help_text()`` are also used by ``tests/docs/test_docs_site.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

PROG = "resnetlab"
WIDTH = "100"
# typer prints through rich, which colours its output when it thinks it is on a CI terminal
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def root_command() -> Any:
    """The click command typer builds from ``resnetlab.cli.app.app``."""
    import typer.main

    from resnetlab.cli.app import app

    return typer.main.get_command(app)


def commands() -> Iterator[tuple[list[str], Any]]:
    """Every command path (``[]`` is ``resnetlab`` itself), depth first, in registration order."""

    def walk(path: list[str], cmd: Any) -> Iterator[tuple[list[str], Any]]:
        yield path, cmd
        if hasattr(cmd, "list_commands"):  # a group (typer ships its own copy of click)
            ctx = cmd.context_class(cmd, info_name=PROG)
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                if sub is not None and not getattr(sub, "hidden", False):
                    yield from walk([*path, name], sub)

    yield from walk([], root_command())


def help_text(path: list[str]) -> str:
    """``resnetlab PATH --help`` as printed at 100 columns, without colour codes."""
    from typer.testing import CliRunner

    from resnetlab.cli.app import app

    env = {"COLUMNS": WIDTH, "LINES": "50", "NO_COLOR": "1", "TERM": "dumb"}
    result = CliRunner().invoke(app, [*path, "--help"], prog_name=PROG, env=env)
    if result.exit_code != 0:
        raise RuntimeError(f"`{PROG} {' '.join(path)} --help` exited {result.exit_code}: "
                           f"{result.output[-500:]}")
    return normalise(result.output)


def normalise(text: str) -> str:
    """Colour codes dropped and trailing blanks of each line removed (rich pads every line to
    the terminal width; HTML shows nothing of them)."""
    lines = [ANSI.sub("", line).rstrip() for line in text.splitlines()]
    while lines and not lines[0]:
        lines.pop(0)
    return "\n".join(lines).rstrip() + "\n"


def anchor(path: list[str]) -> str:
    """The section id of a command (``cli-train``, ``cli-analyze-gradflow``)."""
    return "cli-" + "-".join(path or ["resnetlab"])


class CliReference(SphinxDirective):
    """Renders one section per command with its ``--help`` text in a literal block."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        out: list[nodes.Node] = []
        for path, cmd in commands():
            title = " ".join([PROG, *path])
            section = nodes.section(ids=[anchor(path)], names=[nodes.fully_normalize_name(title)])
            section += nodes.title(title, "", nodes.literal(title, title))
            summary = (cmd.get_short_help_str(limit=200) if path else "").strip()
            if summary:
                para = StringList([summary.replace("`", "'")], source="resnetlab --help")
                container = nodes.container()
                nested_parse_with_titles(self.state, para, container)
                section += container.children
            text = help_text(path)
            block = nodes.literal_block(text, text)
            block["language"] = "text"
            block["classes"].append("resnetlab-cli-help")
            section += block
            out.append(section)
        return out


def setup(app):
    app.add_directive("resnetlab-cli", CliReference)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
