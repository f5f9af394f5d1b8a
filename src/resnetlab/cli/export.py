"""``resnetlab export``: a run or weights file -> a verified ONNX / TorchScript / safetensors file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from resnetlab.cli.common import weights_options

Opt = typer.Option
_W = weights_options()


def command(
    source: Annotated[Path, typer.Argument(help="Run directory, checkpoint directory, or .safetensors or torch weights (.pt/.pth/.th...: judged by content, read weights-only).", show_default=False)],
    format: Annotated[str, Opt("--format", "-f", help="onnx, torchscript or safetensors.")] = "onnx",
    int8: Annotated[bool, Opt("--int8", help="Also write an int8 ONNX model (static PTQ, calibrated on the training data).")] = False,
    fold_bn: Annotated[bool, Opt("--fold-bn", help="Fold BatchNorm into the preceding convolutions first.")] = False,
    max_drop: Annotated[float, Opt(help="Keep int8 only if test accuracy drops by at most this many points.")] = 0.5,
    out: Annotated[Path | None, Opt("--out", "-o", help="Output file (default: RUN/export/model.<ext>).")] = None,
    model: Annotated[str | None, Opt(help=_W["model"])] = None,
    num_classes: Annotated[int | None, Opt(help=_W["num_classes"])] = None,
    in_chans: Annotated[int | None, Opt(help=_W["in_chans"])] = None,
    set_: Annotated[list[str] | None, Opt("--set", help=_W["set"])] = None,
) -> None:
    """Export a trained network, verified against eager PyTorch on real inputs."""
    import math

    from resnetlab.cli.common import parse_set
    from resnetlab.deploy.export import export_model
    from resnetlab.utils.errors import ConfigError

    if not math.isfinite(max_drop) or max_drop < 0:
        raise ConfigError(f"--max-drop {max_drop}: give a number of points >= 0")
    result = export_model(source, format, out=out, int8=int8, fold=fold_bn, max_drop=max_drop,
                          model=model, num_classes=num_classes, in_chans=in_chans,
                          model_kwargs=parse_set(set_, typed=True))
    for note in result.notices:
        print(f"note: {note}")
    c = result.check
    print(f"{result.format}: {result.path}\n  verified on {c['inputs']} inputs: max abs diff "
          f"{c['max_abs_diff']:.2e} (tolerance {c['tolerance']:.1e}), top-1 agreement "
          f"{100 * c['top1_agreement']:.1f}%")
    if result.int8:
        q = result.int8
        print(f"int8: test accuracy {q['fp32_accuracy']:.2f}% -> {q['int8_accuracy']:.2f}% "
              f"({q['change_points']:+.2f} points on {q['test_images']} images, top-1 agreement "
              f"{100 * q['top1_agreement']:.1f}%)")
        if q["kept"]:
            print(f"  kept: {result.path.with_name(q['file'])}")
        else:
            print(f"  int8 loses more than --max-drop {q['max_drop']:g} points: kept the fp32 "
                  "model only")
