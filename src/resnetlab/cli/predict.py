"""``resnetlab predict``: top-k classes with probabilities for image files, folders or CSV rows."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Annotated

import typer

from resnetlab.cli.common import weights_options

Opt = typer.Option
_W = weights_options()


def command(
    source: Annotated[Path, typer.Argument(help="Run directory, checkpoint directory, or .safetensors/.pt/.pth weights.", show_default=False)],
    inputs: Annotated[list[Path], typer.Argument(help="Image files or folders (searched recursively); CSV files for table models.", show_default=False)],
    top_k: Annotated[int, Opt("--top-k", "-k", help="Classes to show per input.")] = 5,
    json_out: Annotated[bool, Opt("--json", help="Print JSON (one object per input).")] = False,
    csv_out: Annotated[bool, Opt("--csv", help="Print CSV rows: input, rank, class, index, prob.")] = False,
    device: Annotated[str, Opt(help="auto, cpu, cuda, mps.")] = "auto",
    precision: Annotated[str, Opt(help="fp32, bf16, fp16 or auto.")] = "fp32",
    batch_size: Annotated[int, Opt(help="Inputs per forward pass.")] = 256,
    backend: Annotated[str, Opt(help="Inference backend.")] = "torch",
    model: Annotated[str | None, Opt(help=_W["model"])] = None,
    num_classes: Annotated[int | None, Opt(help=_W["num_classes"])] = None,
    in_chans: Annotated[int | None, Opt(help=_W["in_chans"])] = None,
    set_: Annotated[list[str] | None, Opt("--set", help=_W["set"])] = None,
    data: Annotated[str | None, Opt(help="Data set bare weights were trained on (for preprocessing and class names).")] = None,
    data_dir: Annotated[str | None, Opt(help="Where that data set's files are.")] = None,
) -> None:
    """Predict the top-k classes of new inputs, preprocessed exactly as in training."""
    from resnetlab.cli.common import parse_set
    from resnetlab.deploy import load_predictor
    from resnetlab.utils.errors import ConfigError

    if json_out and csv_out:
        raise ConfigError("--json and --csv: choose one output format")
    meta = _data_meta(data, data_dir) if data else None
    predictor = load_predictor(source, backend=backend, device=device, precision=precision,
                               model=model, num_classes=num_classes, in_chans=in_chans,
                               model_kwargs=parse_set(set_, typed=True), data_meta=meta,
                               batch_size=batch_size)
    predictions = predictor.predict(inputs, k=top_k)
    if json_out:
        from resnetlab.cli.common import dump_json

        print(dump_json([p.to_dict() for p in predictions]))
    elif csv_out:
        print(to_csv(predictions), end="")
    else:
        print_predictions(predictions)


def _data_meta(data: str, data_dir: str | None) -> dict:
    """Preprocessing meta (mean/std, size, classes) of a data set, as training computed it."""
    from resnetlab.data import build_data

    return build_data(data, data_dir=data_dir, augment="none").meta


def to_csv(predictions) -> str:
    """``input,rank,class,index,prob`` rows, most probable first for each input."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["input", "rank", "class", "index", "prob"])
    for p in predictions:
        for rank, (name, index, prob) in enumerate(zip(p.classes, p.indices, p.probs, strict=True), 1):
            writer.writerow([p.input, rank, name, index, f"{prob:.6f}"])
    return out.getvalue()


def print_predictions(predictions) -> None:
    """One row per input: its top-k classes with probabilities."""
    from resnetlab.cli.common import print_table

    k = max((len(p.classes) for p in predictions), default=0)
    rows = [(p.input, *(f"{c} {100 * q:.1f}%" for c, q in zip(p.classes, p.probs, strict=True)))
            for p in predictions]
    print_table(f"top-{k} predictions ({len(predictions)} inputs)",
                ["input", *(f"#{i}" for i in range(1, k + 1))], rows)
