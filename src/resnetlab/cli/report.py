"""``resnetlab report``: one self-contained HTML page for a run (images embedded)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def command(
    source: Annotated[Path, typer.Argument(help="Run directory, or a comparison directory (`resnetlab compare`).", show_default=False)],
    out: Annotated[Path | None, typer.Option(help="HTML file to write (default: RUN/report.html).")] = None,
) -> None:
    """Write an HTML report: config, summary, curves, confusion matrix and analysis figures."""
    from resnetlab.analysis.report import write_report

    path = write_report(source, out)
    print(f"wrote {path}")
