"""``resnetlab models``: the model zoo as a table (or JSON rows for scripts)."""

from __future__ import annotations

import json

import typer

from resnetlab.utils.errors import UserError

FAMILIES = ("cifar", "imagenet", "wide", "mlp")


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


def command(
    pattern: str = typer.Argument("*", help="Glob over model names, e.g. 'resnet*' or '*50*'."),
    family: str = typer.Option(None, "--family", help=f"Only one family: {', '.join(FAMILIES)}."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON rows (ints, not '1.2M')."),
) -> None:
    """List registered models: parameters, multiply-accumulates at the default input size,
    depth (weight layers on the main path), block type and shortcut.  Models are built on the
    meta device, so this costs no real compute."""
    from resnetlab.models.summary import model_summary
    from resnetlab.registry import list_models, model_info

    if family is not None and family not in FAMILIES:
        raise UserError(f"--family {family!r}: choose one of {', '.join(FAMILIES)}")
    names = [n for n in list_models(pattern)
             if family is None or model_info(n).get("family") == family]
    if not names:
        raise UserError(f"no model matches {pattern!r}"
                        + (f" in --family {family}" if family else "")
                        + "; run `resnetlab models` to list them all")
    rows = [model_summary(n) for n in names]
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows)
