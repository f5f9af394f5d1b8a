"""``resnetlab eval``: loss, top-1/top-5 and per-class accuracy of a run or a weights file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from resnetlab.cli.common import weights_options

Opt = typer.Option
_W = weights_options()


def command(
    source: Annotated[Path, typer.Argument(help="Run directory, checkpoint directory, or .safetensors/.pt/.pth weights.", show_default=False)],
    data: Annotated[str | None, Opt(help="Data set (default: the one the run trained on).")] = None,
    split: Annotated[str, Opt(help="test, val or train (without augmentation).")] = "test",
    data_dir: Annotated[str | None, Opt(help="Where the data set's files are.")] = None,
    batch_size: Annotated[int | None, Opt(help="Evaluation batch size.")] = None,
    tta: Annotated[bool, Opt("--tta/--no-tta", help="Average the image and its mirror.")] = False,
    device: Annotated[str, Opt(help="auto, cpu, cuda, mps.")] = "auto",
    precision: Annotated[str, Opt(help="fp32, bf16, fp16 or auto.")] = "auto",
    model: Annotated[str | None, Opt(help=_W["model"])] = None,
    num_classes: Annotated[int | None, Opt(help=_W["num_classes"])] = None,
    in_chans: Annotated[int | None, Opt(help=_W["in_chans"])] = None,
    set_: Annotated[list[str] | None, Opt("--set", help=_W["set"])] = None,
    per_class: Annotated[bool, Opt("--per-class", help="Also print accuracy per class.")] = False,
    confusion: Annotated[Path | None, Opt(help="Write the confusion matrix as a PNG here.")] = None,
    json_out: Annotated[bool, Opt("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Evaluate a trained network on a data split."""
    from resnetlab.cli.common import checkpoint_data, dump_json, parse_set
    from resnetlab.deploy import load_model
    from resnetlab.utils import resolve_device

    if split not in ("test", "val", "train"):
        raise typer.BadParameter(f"{split!r}: choose test, val or train", param_hint="--split")
    loaded = load_model(source, model=model, num_classes=num_classes, in_chans=in_chans,
                        model_kwargs=parse_set(set_, typed=True))
    dev = resolve_device(device)
    bundle = checkpoint_data(loaded, data, data_dir=data_dir, batch_size=batch_size, device=dev)
    report = evaluate_split(loaded, bundle, split, dev, precision, tta)
    if confusion is not None:
        from resnetlab.analysis import plot_confusion

        plot_confusion(report["confusion"], bundle.classes, confusion,
                       title=f"{report['data']} {split}: top-1 {100 * report['top1']:.2f}%")
    if json_out:
        print(dump_json(report))
    else:
        print_report(report, bundle.classes, per_class)


def evaluate_split(loaded, bundle, split: str, device, precision: str, tta: bool) -> dict:
    """Run the engine's ``evaluate`` on one split; returns a JSON-able report."""
    from resnetlab.data import flip_tta
    from resnetlab.engine import evaluate
    from resnetlab.utils import resolve_dtype
    from resnetlab.utils.errors import ConfigError

    loader = {"test": bundle.test, "val": bundle.val, "train": bundle.train}[split]
    if loader is None or loader.num_samples == 0:
        raise ConfigError(f"--split {split}: {bundle.meta['name']} has no {split} split here")
    if split == "train":
        loader = _plain_train(bundle)
    if bundle.num_classes != loaded.build_args.get("num_classes", bundle.num_classes):
        raise ConfigError(f"{loaded.source} predicts {loaded.build_args['num_classes']} classes "
                          f"but --data {bundle.meta['name']} has {bundle.num_classes}")
    result = evaluate(loaded.model.to(device), loader, device=device,
                      dtype=resolve_dtype(precision, device), num_classes=bundle.num_classes,
                      tta=flip_tta if tta else None, channels_last=True)
    return {"source": str(loaded.source), "model": loaded.build_args["name"],
            "data": bundle.meta["name"], "split": split, "tta": tta, **result.to_dict()}


def _plain_train(bundle):
    """The training split in fixed order without augmentation (what the numbers should mean)."""
    from resnetlab.data import BatchLoader

    train = bundle.train
    return BatchLoader(train.source, batch_size=bundle.val.batch_size, train=False,
                       seed=0, transform=bundle.val.transform, name="train")


def print_report(report: dict, classes: list[str], per_class: bool) -> None:
    from resnetlab.cli.common import pct, print_table

    print_table(f"{report['model']} on {report['data']} ({report['split']})", ["", "value"], [
        ("checkpoint", report["source"]), ("samples", report["num_samples"]),
        ("loss", f"{report['loss']:.4f}"), ("top-1", pct(report["top1"])),
        ("top-5", pct(report["top5"])), ("flip TTA", "yes" if report["tta"] else "no"),
    ], numbers=False)
    if per_class:
        rows = [(name, pct(acc), sum(report["confusion"][i]))
                for i, (name, acc) in enumerate(zip(classes, report["per_class"], strict=True))]
        print_table("per class", ["class", "accuracy", "samples"], rows)
