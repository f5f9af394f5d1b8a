"""Glue shared by the ``train``, ``eval`` and ``predict`` commands (parsing and printing only;
the work is done by the library)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from resnetlab.utils.errors import ConfigError, UserError

__all__ = [
    "locate_config", "parse_set", "parse_number_list", "pct", "print_table", "console",
    "check_input_fits", "input_size", "data_kwargs", "checkpoint_data", "weights_options",
]

# The recipes shipped with the project live in configs/ at the repository root.
_PROJECT_ROOT = Path(__file__).resolve().parents[3]


def locate_config(spec: str | os.PathLike) -> Path:
    """A config file from a path or a recipe name (``default``, ``long``: ``configs/NAME.yaml``
    in the working directory, then in the project the package was installed from)."""
    path = Path(spec)
    if path.is_file():
        return path
    if path.suffix or os.sep in str(spec):
        raise ConfigError(f"--config {spec}: no such file")
    places = [Path.cwd() / "configs", _PROJECT_ROOT / "configs"]
    for folder in places:
        if (folder / f"{spec}.yaml").is_file():
            return folder / f"{spec}.yaml"
    looked = ", ".join(str(p / f"{spec}.yaml") for p in dict.fromkeys(places))
    raise ConfigError(f"--config {spec}: no recipe of that name (looked at {looked}); "
                      "pass a YAML file path")


def parse_set(items: Sequence[str] | None, flag: str = "--set", typed: bool = False) -> dict[str, Any]:
    """``["width_mult=0.5", "shortcut=B"]`` -> ``{"width_mult": "0.5", ...}``.  Values stay text
    (the config layer parses them) unless ``typed``, which parses them as YAML scalars."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE, e.g. {flag} width_mult=0.5")
        value = value.strip()
        if typed:
            try:
                value = yaml.safe_load(value) if value else value
            except yaml.YAMLError:
                pass  # not YAML: keep the text
        out[key.strip()] = value
    return out


def parse_number_list(text: str | None, flag: str) -> list[float] | None:
    """``"30,45"`` -> ``[30.0, 45.0]``; None stays None."""
    if text is None:
        return None
    try:
        return [float(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected comma-separated numbers, e.g. 30,45") from None


def data_kwargs(data_cfg: Any, *, seed: int, device: Any, channels_last: bool,
                in_chans: int | None) -> dict[str, Any]:
    """``build_data`` keyword arguments from a ``DataConfig`` (its fields map one to one;
    ``name`` is the positional argument and left out)."""
    from dataclasses import asdict

    fields = {k: v for k, v in asdict(data_cfg).items() if k != "name"}
    return {**fields, "seed": seed, "device": device, "channels_last": channels_last,
            "in_chans": in_chans}


def input_size(input_kind: str, shape: Sequence[int]) -> int:
    """What a model reads from data of ``shape``: channels (images) or features (vectors;
    images are flattened, so an MLP-ResNet on 1x28x28 reads 784)."""
    return math.prod(shape) if input_kind == "vector" else int(shape[0])


def check_input_fits(model_name: str, input_kind: str, model_in: int | None,
                     bundle: Any, data_name: str) -> None:
    """One-line errors for a network that cannot read the data (tables vs images, channels)."""
    shape = tuple(bundle.input_shape)
    if input_kind == "image" and len(shape) != 3:
        raise UserError(f"--model {model_name} reads images but --data {data_name} is a table "
                        f"of {shape[0]} features; use a vector model such as mlp_resnet")
    need = input_size(input_kind, shape)
    if model_in is not None and model_in != need:
        unit = "features" if input_kind == "vector" else "channels"
        raise UserError(f"--model {model_name} expects {model_in} input {unit} but --data "
                        f"{data_name} gives {need} (shape {shape}); use data with {model_in} {unit}")


def pct(x: float | None) -> str:
    """A fraction as a percentage with two decimals ("-" when missing)."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"


def console(stderr: bool = False):
    """A rich console; off a terminal (pipes, logs) 120 columns wide so nothing is cut."""
    from rich.console import Console

    out = Console(highlight=False, stderr=stderr)
    return out if out.is_terminal else Console(highlight=False, stderr=stderr, width=120)


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                numbers: bool = True) -> None:
    """A rich table on stdout; ``numbers`` right-aligns every column after the first."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        # the first column holds names and paths: wrap them rather than cut them short
        table.add_column(col, justify="right" if numbers and i else "left",
                         overflow="fold" if i == 0 else "ellipsis")
    for row in rows:
        table.add_row(*(str(c) for c in row))
    console().print(table)


def dump_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=_jsonable)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def checkpoint_data(loaded: Any, data: str | None, *, data_dir: str | None, batch_size: int | None,
                    device: Any) -> Any:
    """The data set to evaluate a loaded network on.

    Without ``data``, the one it was trained on, split exactly as in training (the checkpoint's
    config).  Another data set keeps its own channels for named sets (a mismatch is an error)
    and converts folder images to the network's channels and training size.
    """
    from resnetlab.data import build_data
    from resnetlab.engine import DataConfig, RunConfig

    trained = (loaded.data_meta or {}).get("name")
    name = data or trained
    if name is None:
        raise ConfigError(f"{loaded.source}: bare weights do not say which data they were trained "
                          "on; pass --data NAME (e.g. --data fashion-mnist)")
    saved = loaded.meta.get("config")
    cfg = RunConfig.from_dict(saved, source=str(loaded.source)).data if saved else DataConfig()
    same = name == trained
    if not same:
        cfg = DataConfig(name=name)
    cfg.augment = "none"
    cfg.data_dir = data_dir if data_dir is not None else cfg.data_dir
    cfg.eval_batch_size = batch_size or cfg.eval_batch_size
    folder = name.startswith("folder:")
    if folder and cfg.image_size is None and (loaded.data_meta or {}).get("image_size"):
        cfg.image_size = tuple(loaded.data_meta["image_size"])  # the size it was trained at
    in_chans = loaded.in_channels if loaded.input_kind == "image" and (folder or same) else None
    seed = (saved or {}).get("train", {}).get("seed", 0)
    bundle = build_data(name, **data_kwargs(cfg, seed=seed, device=device, channels_last=True,
                                            in_chans=in_chans))
    check_input_fits(loaded.build_args["name"], loaded.input_kind, loaded.in_channels, bundle, name)
    return bundle


def weights_options() -> dict[str, Any]:
    """Help texts of the flags that rebuild bare weights (shared by eval and predict)."""
    return {
        "model": "Architecture of bare weights (a registry name); checkpoints name their own.",
        "num_classes": "Classes of bare weights (default: read off the classifier).",
        "in_chans": "Input channels (features for vector models) of bare weights (default: read off the weights).",
        "set": "Model argument KEY=VALUE of bare weights (repeatable), e.g. --set width_mult=0.5.",
    }
