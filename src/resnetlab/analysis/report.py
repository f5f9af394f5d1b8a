"""One self-contained HTML report per run: config, summary, curves, confusion matrix and the
gradient-flow / lesion / Grad-CAM figures found in ``RUN/analysis``.

Images are embedded as ``data:`` URIs and the page has no script, so the single file can be
mailed or archived and opens in any browser.  The page is a list of :class:`Section` objects
rendered by a jinja2 template shipped as package data; :func:`run_sections` builds them for one
run, and a comparison (many runs) only has to build its own list of sections.
"""

from __future__ import annotations

import base64
import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from resnetlab.utils.errors import DataError

__all__ = ["Section", "Figure", "run_sections", "comparison_sections", "render_report", "write_report"]

# analysis studies in the order a reader wants them (see analysis/studies.py)
_STUDIES = [("gradflow", "Gradient flow"), ("lesion", "Block lesions (Veit et al. 2016)"),
            ("gradcam", "Grad-CAM"), ("saliency", "Saliency (input gradients)")]
_MAX_OVERLAYS = 12  # single-image overlays embedded per study (the grid shows the rest)


@dataclass
class Figure:
    """An embedded PNG: ``src`` is a data URI."""

    title: str
    src: str


@dataclass
class Section:
    """One part of the page: findings (sentences), a key/value or row table, figures (each at
    the page's width: per-class grids and comparison plots must stay readable), thumbnails
    (single-image overlays), text."""

    title: str
    findings: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    thumbs: list[Figure] = field(default_factory=list)
    preformatted: str | None = None


def data_uri(path: Path) -> str:
    """A PNG file as a ``data:image/png;base64,...`` URI."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return "-" if value is None else str(value)


def _pct(value: Any) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def _summary(run: Path) -> Section:
    res = json.loads((run / "results.json").read_text()) if (run / "results.json").is_file() else {}
    rows = [[k, v] for k, v in [
        (f"{res.get('split', 'test')} top-1", _pct(res.get("top1"))),
        (f"{res.get('split', 'test')} top-5", _pct(res.get("top5"))),
        ("validation top-1", _pct(res.get("val_top1"))),
        ("test loss", _fmt(res.get("loss"))), ("samples", _fmt(res.get("num_samples"))),
        ("epochs", _fmt(res.get("epochs"))), ("steps", _fmt(res.get("steps"))),
        ("flip TTA", "yes" if res.get("tta") else "no"),
        ("training time (s)", _fmt(res.get("train_time_s"))),
        ("images/s", _fmt(res.get("images_per_s"))),
    ] if v != "-"]
    section = Section("Summary", columns=["", "value"], rows=rows)
    if not res:
        section.findings.append("no results.json: the run has not finished its final evaluation")
    return section


def _figures(run: Path, names: list[tuple[str, str]]) -> list[Figure]:
    return [Figure(title, data_uri(run / name)) for name, title in names if (run / name).is_file()]


def _study(folder: Path, key: str, title: str) -> Section | None:
    meta = folder / f"{key}.json"
    if not meta.is_file():
        return None
    info = json.loads(meta.read_text())
    section = Section(title, findings=list(info.get("findings", [])))
    if info.get("figure") and (folder / info["figure"]).is_file():
        section.figures.append(Figure(title, data_uri(folder / info["figure"])))
    for png in sorted((folder / key).glob("*.png"))[:_MAX_OVERLAYS] if (folder / key).is_dir() else []:
        section.thumbs.append(Figure(png.stem, data_uri(png)))
    if key == "gradflow":
        cols = ["model", "first_last_ratio", "spread", "logits_std", "nonfinite"]
        section.columns = cols
        section.rows = [[_fmt(s.get(c)) for c in cols] for s in info.get("summaries", [])]
    return section


def run_sections(run: str | os.PathLike) -> tuple[str, list[Section]]:
    """The title and sections of one run directory's report."""
    run = Path(run)
    if not run.is_dir():
        raise DataError(f"{run}: no such run directory")
    if not any((run / f).exists() for f in ("config.yaml", "metrics.csv", "checkpoints", "results.json")):
        raise DataError(f"{run}: not a run directory (no config.yaml, metrics.csv, checkpoints/ or "
                        "results.json inside)")
    _ensure_curves(run)
    sections = [_summary(run)]
    figures = _figures(run, [("curves.png", "training curves"), ("confusion.png", "confusion matrix")])
    if figures:
        sections.append(Section("Curves and confusion matrix", figures=figures))
    for key, title in _STUDIES:
        found = _study(run / "analysis", key, title)
        if found:
            sections.append(found)
    if (run / "config.yaml").is_file():
        sections.append(Section("Configuration", preformatted=(run / "config.yaml").read_text()))
    return run.name, sections


def _ensure_curves(run: Path) -> None:
    """Draw ``curves.png`` from ``metrics.csv`` when a run stopped before writing it."""
    if not (run / "curves.png").is_file() and (run / "metrics.csv").is_file():
        from resnetlab.analysis.plots import plot_curves

        try:
            plot_curves(run / "metrics.csv", run / "curves.png", title=run.name)
        except DataError:
            pass  # no finished epoch: the report says so through the missing figure


def render_report(title: str, sections: list[Section]) -> str:
    """The HTML page (a jinja2 template from the package, HTML-escaped values)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("resnetlab.analysis", "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True)
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return env.get_template("report.html.j2").render(title=title, sections=sections, created=created)


def comparison_sections(folder: str | os.PathLike) -> tuple[str, list[Section]]:
    """The title and sections of a comparison directory's report (``resnetlab compare``): the
    findings, the table, the figures and links to the member runs, read off ``comparison.json``."""
    folder = Path(folder)
    info = json.loads((folder / "comparison.json").read_text())
    sections = [Section("Findings", findings=list(info.get("findings", []))),
                Section("Results (mean ± std over seeds)", findings=_notes(info),
                        columns=list(info.get("columns", [])),
                        rows=[list(map(str, r)) for r in info.get("rows", [])])]
    figures = [Figure(title, data_uri(folder / name)) for name, title in info.get("figures", [])
               if (folder / name).is_file()]
    if figures:
        sections.append(Section("Figures", figures=figures))
    members = info.get("members", [])
    sections.append(Section("Member runs (run directories: resnetlab eval / report work on each)",
                            columns=["run", "seed", "final train error", "test error"],
                            rows=[[f"runs/{m['name']}", _fmt(m.get("seed")), _pct(m.get("final_train_err")),
                                   _pct(m.get("test_err"))] for m in members]))
    if (folder / "compare.yaml").is_file():
        sections.append(Section("Plan and recipe", preformatted=(folder / "compare.yaml").read_text()))
    return str(info.get("title", folder.name)), sections


def _notes(info: dict[str, Any]) -> list[str]:
    """How to read the table (``comparison.json``'s ``notes``; older files carry none)."""
    return [str(n) for n in info.get("notes", [])]


def write_report(source: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the HTML report of a run or of a comparison (default ``SOURCE/report.html``);
    returns its path."""
    is_comparison = (Path(source) / "comparison.json").is_file()
    title, sections = (comparison_sections if is_comparison else run_sections)(source)
    path = Path(out) if out else Path(source) / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render_report(title, sections), encoding="utf-8")
    os.replace(tmp, path)
    return path
