"""``resnetlab eval``: loss, top-1/top-5 and per-class accuracy of a run or a weights file.

Labels are matched to the network's classes by name (see :mod:`resnetlab.run.evaluation`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from resnetlab.cli.common import weights_options

Opt = typer.Option
_W = weights_options()


def command(
    source: Annotated[Path, typer.Argument(help="Run directory, checkpoint directory, or .safetensors or torch weights (.pt/.pth/.th...: judged by content, read weights-only).", show_default=False)],
    data: Annotated[str | None, Opt(help="Data set (default: the one the run trained on).")] = None,
    split: Annotated[str, Opt(help="test, val, train (without augmentation) or all (every row of the data).")] = "test",
    data_dir: Annotated[str | None, Opt(help="Where the data set's files are.")] = None,
    batch_size: Annotated[int | None, Opt(help="Evaluation batch size.")] = None,
    target: Annotated[str | None, Opt(help="Target column of a CSV, as in train; must be the run's own (default: the run's).")] = None,
    tta: Annotated[bool, Opt("--tta/--no-tta", help="Average the image and its mirror.")] = False,
    device: Annotated[str, Opt(help="auto, cpu, cuda, mps.")] = "auto",
    precision: Annotated[str, Opt(help="fp32, bf16, fp16 or auto.")] = "auto",
    model: Annotated[str | None, Opt(help=_W["model"])] = None,
    num_classes: Annotated[int | None, Opt(help=_W["num_classes"])] = None,
    in_chans: Annotated[int | None, Opt(help=_W["in_chans"])] = None,
    set_: Annotated[list[str] | None, Opt("--set", help=_W["set"])] = None,
    ignore_unknown_classes: Annotated[bool, Opt("--ignore-unknown-classes", help="Drop samples of classes the network does not know (and report how many) instead of stopping.")] = False,
    per_class: Annotated[bool, Opt("--per-class", help="Also print accuracy per class.")] = False,
    confusion: Annotated[Path | None, Opt(help="Write the confusion matrix as a PNG here.")] = None,
    json_out: Annotated[bool, Opt("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Evaluate a trained network on a data split."""
    from resnetlab import run
    from resnetlab.cli.common import dump_json, parse_set

    report, bundle = run.evaluate(
        source, data, split, tta, device=device, precision=precision, data_dir=data_dir,
        batch_size=batch_size, target=target, ignore_unknown_classes=ignore_unknown_classes, model=model,
        num_classes=num_classes, in_chans=in_chans, model_kwargs=parse_set(set_, typed=True))
    if confusion is not None and report.rmse is not None:
        from resnetlab.utils.errors import ConfigError

        raise ConfigError(f"--confusion {confusion}: {source} is a regression (no classes); "
                          "drop --confusion")
    if confusion is not None:
        from resnetlab.analysis import plot_confusion

        plot_confusion(report.confusion, report.classes, confusion,
                       title=f"{report.data} {split}: top-1 {100 * report.top1:.2f}%")
    if json_out:
        print(dump_json(report.to_dict()))
    else:
        print_report(report, per_class)


def print_report(report, per_class: bool) -> None:
    from resnetlab.cli.common import console, pct, print_table

    rows = [("checkpoint", report.source), ("samples", report.num_samples),
            ("loss", f"{report.loss:.4f}")]
    if report.rmse is not None:  # a regression table
        rows += [("RMSE", f"{report.rmse:.4g}"), ("R2", f"{report.r2:.4f}")]
    else:
        rows.append(("top-1", pct(report.top1)))
    if report.top5 is not None:
        rows.append(("top-5", pct(report.top5)))
    rows.append(("flip TTA", "yes" if report.tta else "no"))
    print_table(f"{report.model} on {report.data} ({report.split})", ["", "value"], rows,
                numbers=False)
    if report.dropped_unknown:
        console(stderr=True).print(f"dropped {report.dropped_unknown} samples of classes the "
                                   f"network does not know: {', '.join(report.unknown_classes)}")
    if per_class:
        table = [(name, pct(acc), sum(report.confusion[i]))
                 for i, (name, acc) in enumerate(report.per_class.items())]
        print_table("per class", ["class", "accuracy", "samples"], table)
