"""``resnetlab models``: the model zoo as a table (or JSON rows for scripts).

Counting all 44 models takes about 15 s of Python on 2 CPU cores (building ResNet-1202 alone is
1 s), so the rows ship with the package (``models/zoo_table.json``, kept equal to the models by
a test): a listing reads one JSON file, builds nothing and never imports torch.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import typer

from resnetlab.utils.errors import UserError

# The README's groups; a model is in its family's group and maybe in preact / resnet-d.
FAMILIES = ("cifar", "imagenet", "preact", "resnet-d", "wide", "mlp")


def _params(n: int) -> str:
    return f"{n / 1e6:.2f}M"  # the papers' unit: ResNet-20 is "0.27M"


def _macs(n: int) -> str:
    return f"{n / 1e9:.2f}G" if n >= 1e9 else f"{n / 1e6:.1f}M"


def _print_table(rows: list[dict]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"resnetlab models ({len(rows)})", box=box.SIMPLE_HEAD, pad_edge=False)
    for header, justify in (("name", "left"), ("params", "right"), ("MACs", "right"),
                            ("input", "left"), ("depth", "right"), ("block", "left"),
                            ("shortcut", "left")):
        table.add_column(header, justify=justify, no_wrap=True)
    for r in rows:
        table.add_row(r["name"], _params(r["params"]), _macs(r["macs"]),
                      "x".join(map(str, r["input_size"])), str(r["depth"]), r["block"],
                      r["shortcut"])
    console = Console()
    if not console.is_terminal:  # a pipe or file has no width: never truncate names there
        console = Console(width=120)
    console.print(table)


def zoo_table() -> list[dict]:
    """Every registered model's row, in ``list_models()`` order, from the table shipped with
    the package (``models/zoo_table.json``): no model is built and torch is not imported, so a
    cold listing takes well under a second (counting them took 20-36 s, issue 25)."""
    return json.loads(_TABLE.read_text())


# resnetlab/models/zoo_table.json, found without importing resnetlab.models (which imports
# torch); written by resnetlab.models.summary.write_zoo_table, checked by tests/models/
_TABLE = Path(__file__).resolve().parents[1] / "models" / "zoo_table.json"


def command(
    pattern: str = typer.Argument("*", help="Glob over model names, e.g. 'resnet*' or '*50*'."),
    family: str = typer.Option(None, "--family", help=f"Only one group: {', '.join(FAMILIES)}."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON rows (ints, not '1.2M')."),
) -> None:
    """List registered models: parameters, multiply-accumulates at the default input size,
    depth (weight layers as the papers count them), block type and shortcut."""
    if family is not None and family not in FAMILIES:
        raise UserError(f"--family {family!r}: choose one of {', '.join(FAMILIES)}")
    rows = [r for r in zoo_table() if fnmatch.fnmatch(r["name"], pattern)
            and (family is None or family in r["groups"])]
    if not rows:
        raise UserError(f"no model matches {pattern!r}"
                        + (f" in --family {family}" if family else "")
                        + "; run `resnetlab models` to list them all")
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows)
