"""``resnetlab convert``: a weights file users already have -> clean safetensors with metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Opt = typer.Option


def command(
    source: Annotated[Path, typer.Argument(help="Weights file: .safetensors, or a torch file (.pth/.pt/.th/...; read weights-only). The layout is detected from the content.", show_default=False)],
    output: Annotated[Path, typer.Argument(help="Output .safetensors file.", show_default=False)],
    model: Annotated[str | None, Opt(help="Registry name of the architecture (default: read off the file's keys).")] = None,
    strict: Annotated[bool, Opt("--strict", help="Every model key must be in the file and nothing else; names what differs.")] = False,
    classes: Annotated[str | None, Opt(help="Class names, comma-separated, or a text file with one per line.")] = None,
    set_: Annotated[list[str] | None, Opt("--set", help="Model argument KEY=VALUE (repeatable), e.g. --set shortcut_pad=split.")] = None,
    force: Annotated[bool, Opt("--force", help="Overwrite OUTPUT if it exists.")] = False,
) -> None:
    """Convert a weights file (torchvision, timm, CIFAR reimplementation, DDP/compile-wrapped)
    to safetensors that names its model, arguments, classes and source sha256."""
    from resnetlab.cli.common import parse_set
    from resnetlab.transfer import convert_weights
    from resnetlab.utils.errors import ConfigError

    if output.exists() and not force:
        raise ConfigError(f"{output} exists; pass --force to overwrite it")
    meta, missing = convert_weights(source, output, model, strict=strict,
                                    classes=_class_names(classes), **parse_set(set_, typed=True))
    args = ", ".join(f"{k}={v}" for k, v in meta["model"].items() if k != "name")
    print(f"wrote {output}: {meta['model']['name']}({args}) from {source} "
          f"[layout {meta['source']['layout']}, sha256 {meta['source']['sha256'][:12]}]")
    if missing:
        shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
        print(f"notice: {len(missing)} model keys were not in {source} and keep their initial "
              f"values: {shown} (--strict refuses such files)")


def _class_names(spec: str | None) -> list[str] | None:
    """``"cat,dog"`` or a file with one class name per line."""
    if spec is None:
        return None
    path = Path(spec)
    lines = path.read_text().splitlines() if path.is_file() else spec.split(",")
    return [line.strip() for line in lines if line.strip()]
