"""``resnetlab predict``: top-k classes with probabilities for image files, folders or CSV rows.

Results are printed as each batch is computed (memory stays flat in the number of inputs); the
throughput, skipped files and notices go to stderr at the end.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from resnetlab.cli.common import weights_options

Opt = typer.Option
_W = weights_options()


def command(
    source: Annotated[Path, typer.Argument(help="Run directory, checkpoint directory, .onnx export, or .safetensors or torch weights (.pt/.pth/.th...: judged by content, read weights-only).", show_default=False)],
    inputs: Annotated[list[Path], typer.Argument(help="Image files or folders (searched recursively); CSV files for table models.", show_default=False)],
    top_k: Annotated[int, Opt("--top-k", "-k", help="Classes to show per input.")] = 5,
    json_out: Annotated[bool, Opt("--json", help="Print a JSON array (one object per input, streamed).")] = False,
    csv_out: Annotated[bool, Opt("--csv", help="Print CSV rows: input, rank, class, index, prob.")] = False,
    runtime: Annotated[str, Opt(help="auto (a run's verified ONNX export, made once when missing and onnxruntime is installed; else torch), torch or onnx.")] = "auto",
    device: Annotated[str, Opt(help="auto, cpu, cuda, mps (torch runtime).")] = "auto",
    precision: Annotated[str, Opt(help="fp32, bf16, fp16 or auto (torch runtime).")] = "fp32",
    batch_size: Annotated[int, Opt(help="Inputs decoded and run per batch.")] = 64,
    on_bad_image: Annotated[str, Opt(help="error, or skip unreadable images (named and counted at the end).")] = "error",
    model: Annotated[str | None, Opt(help=_W["model"])] = None,
    num_classes: Annotated[int | None, Opt(help=_W["num_classes"])] = None,
    in_chans: Annotated[int | None, Opt(help=_W["in_chans"])] = None,
    set_: Annotated[list[str] | None, Opt("--set", help=_W["set"])] = None,
    data: Annotated[str | None, Opt(help="Data set bare weights were trained on (preprocessing and class names), or the preset imagenet.")] = None,
    data_dir: Annotated[str | None, Opt(help="Where that data set's files are.")] = None,
) -> None:
    """Predict the top-k classes of new inputs, preprocessed exactly as in training."""
    from resnetlab.cli.common import parse_set
    from resnetlab.deploy import load_predictor
    from resnetlab.utils.errors import ConfigError

    if json_out and csv_out:
        raise ConfigError("--json and --csv: choose one output format")
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: must be at least 1")
    if top_k < 1:
        raise ConfigError(f"--top-k {top_k}: must be at least 1")
    meta = _data_meta(data, data_dir) if data else None
    predictor = load_predictor(source, runtime=runtime, device=device, precision=precision,
                               model=model, num_classes=num_classes, in_chans=in_chans,
                               model_kwargs=parse_set(set_, typed=True), data_meta=meta,
                               batch_size=batch_size, on_bad_image=on_bad_image)
    write = _Writer("json" if json_out else "csv" if csv_out else "text")
    start, count, shown = time.perf_counter(), 0, 0
    for prediction in predictor.iter_predict(inputs, k=top_k):
        shown = _print_notices(predictor.notices, shown)
        write(prediction)
        count += 1
    write.close()
    _print_notices(predictor.notices, shown)
    seconds = time.perf_counter() - start
    if predictor.skipped:
        print(f"skipped {len(predictor.skipped)} unreadable image(s): "
              f"{', '.join(predictor.skipped[:5])}{' ...' if len(predictor.skipped) > 5 else ''}",
              file=sys.stderr)
    print(f"{count} inputs in {seconds:.2f} s: {count / max(seconds, 1e-9):.1f} images/s "
          f"({predictor.runtime} runtime)", file=sys.stderr)


def _print_notices(notices: list[str], shown: int) -> int:
    for note in notices[shown:]:
        print(f"note: {note}", file=sys.stderr)
    return len(notices)


def _data_meta(data: str, data_dir: str | None) -> dict:
    """Preprocessing meta of a data set as training computed it, or the ImageNet preset."""
    from resnetlab.deploy.export import data_meta_for
    from resnetlab.deploy.presets import preset_meta

    if data == "imagenet":
        return preset_meta("imagenet")
    return data_meta_for(data, data_dir)


class _Writer:
    """Prints one prediction per call, flushed, so output streams: text lines, CSV rows, or one
    JSON array written element by element (valid JSON once ``close`` ran)."""

    def __init__(self, kind: str):
        self.kind, self.count = kind, 0
        self.csv = csv.writer(sys.stdout, lineterminator="\n") if kind == "csv" else None
        if self.csv is not None:
            self.csv.writerow(["input", "rank", "class", "index", "prob"])

    def __call__(self, p) -> None:
        if self.kind == "json":
            print(("[" if self.count == 0 else ",") + "\n" + json.dumps(p.to_dict()), end="")
        elif p.value is not None:  # a regression table: the value (in the prob column for csv)
            if self.csv is not None:
                self.csv.writerow([p.input, 1, p.classes[0], 0, f"{p.value:.6g}"])
            else:
                print(f"{p.input}  {p.classes[0]} {p.value:.6g}")
        elif self.csv is not None:
            for rank, (name, index, prob) in enumerate(
                    zip(p.classes, p.indices, p.probs, strict=True), 1):
                self.csv.writerow([p.input, rank, name, index, f"{prob:.6f}"])
        else:
            print(p.input + "  " + "  ".join(
                f"{c} {100 * q:.1f}%" for c, q in zip(p.classes, p.probs, strict=True)))
        self.count += 1
        sys.stdout.flush()

    def close(self) -> None:
        if self.kind == "json":
            print("[]" if self.count == 0 else "\n]", flush=True)
