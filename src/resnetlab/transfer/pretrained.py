"""Build the network a weights file was trained as, and convert such files to clean safetensors.

A file names its architecture only when it is ours (a resnetlab header).  Otherwise the
registry name is read off the keys (stages, blocks per stage, basic or bottleneck, deep stem)
and ``num_classes``, ``in_chans`` and ``width_mult`` off the shapes; a ``--model`` flag wins.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnetlab.checkpoint import fill_untracked
from resnetlab.models.registry import create_model, list_models
from resnetlab.transfer.weights import WeightsFile, check_fit, file_sha256, read_weights
from resnetlab.utils.errors import ConfigError

__all__ = ["guess_model", "build_args_for", "load_pretrained", "convert_weights"]

FORMAT = "resnetlab-weights"
# Blocks per stage of the ImageNet ResNets (He et al. 2015, table 1), basic / bottleneck.
_IMAGENET_DEPTHS = {((2, 2, 2, 2), False): 18, ((3, 4, 6, 3), False): 34,
                    ((3, 4, 6, 3), True): 50, ((3, 4, 23, 3), True): 101,
                    ((3, 8, 36, 3), True): 152}


def _layout_preprocessing(weights: WeightsFile, args: dict[str, Any]) -> dict[str, Any] | None:
    """What the source's own training fed the network, where the layout tells.

    The CIFAR reimplementation trains CIFAR-10 at 32x32 and normalises with the ImageNet
    mean/std (its ``transforms.Normalize(mean=[0.485, 0.456, 0.406], ...)``), not CIFAR's own.
    """
    if weights.meta.get("data"):
        return dict(weights.meta["data"])
    if weights.layout != "cifar-reimpl" or args.get("in_chans") != 3:
        return None
    preset: dict[str, Any] = {
        "kind": "image", "name": "cifar10", "in_chans": 3, "image_size": [32, 32],
        "input_shape": [3, 32, 32], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
        "resize": "cover, bilinear, centre crop", "alpha_background": 0,
        "source": "preset of the cifar-reimpl weights layout"}
    if args.get("num_classes") == 10:
        from resnetlab.data.datasets import dataset_info  # only here: the data package is large

        preset["classes"] = list(dataset_info("cifar10").classes)
        preset["num_classes"] = 10
    return preset


def _blocks_per_stage(state: dict[str, torch.Tensor]) -> tuple[int, ...]:
    found: dict[int, set[int]] = {}
    for key in state:
        if m := re.match(r"layer(\d+)\.(\d+)\.", key):
            found.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    return tuple(len(found[i]) for i in sorted(found))


def guess_model(weights: WeightsFile) -> str | None:
    """The registry name of the ResNet these weights fit, or None when the keys do not say."""
    if weights.meta.get("model", {}).get("name"):
        return str(weights.meta["model"]["name"])
    stages, state = _blocks_per_stage(weights.state), weights.state
    bottleneck = "layer1.0.conv3.weight" in state
    if len(stages) == 3 and not bottleneck and len(set(stages)) == 1:
        name = f"resnet{6 * stages[0] + 2}"  # CIFAR family: 6n+2 layers (sec. 4.2)
    elif (depth := _IMAGENET_DEPTHS.get((stages, bottleneck))) is not None:
        name = f"resnet{depth}" + ("d" if "conv1.0.weight" in state else "")
    else:
        return None
    return name if name in list_models() else None


def build_args_for(weights: WeightsFile, name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """``create_model`` arguments (with ``name``) that make ``name`` fit the file's shapes."""
    stored = weights.meta.get("model") or {}
    if stored.get("name") == name:
        return {**stored, **overrides}
    state, args = weights.state, dict(weights.model_args)
    first = next((v for k, v in state.items() if k.startswith("conv1") and v.ndim == 4), None)
    if first is not None:
        args["in_chans"] = int(first.shape[1])
    if "fc.weight" in state:
        args["num_classes"] = int(state["fc.weight"].shape[0])
    probe = create_model(name, **{**args, **overrides})
    own = probe.state_dict().get("layer1.0.conv1.weight")
    got = state.get("layer1.0.conv1.weight")
    if own is not None and got is not None and own.shape[0] != got.shape[0]:
        args["width_mult"] = got.shape[0] / own.shape[0]  # widths scale linearly with it
    return {"name": name, **args, **overrides}


def load_pretrained(path: str | Path, model: str | None = None, *, strict: bool = True,
                    **overrides: Any) -> tuple[nn.Module, dict[str, Any], WeightsFile]:
    """Build the network a weights file was trained as and load it exactly (eval mode).

    Returns ``(model, build_args, weights)``; ``build_args`` (with ``name``) rebuild it, e.g.
    ``shortcut_pad="split"`` for the CIFAR reimplementation's files, so logits match the source.
    """
    weights = read_weights(path)
    name = model or guess_model(weights)
    if name is None:
        raise ConfigError(f"{weights.path}: cannot tell the architecture from its keys "
                          f"(layout {weights.layout}); pass --model NAME")
    args = build_args_for(weights, name, overrides)
    net = create_model(name, **{k: v for k, v in args.items() if k != "name"})
    weights.state = fill_untracked(net.state_dict(), weights.state, weights.path)
    check_fit(weights.path, net.state_dict(), weights.state, strict)
    net.load_state_dict(weights.state, strict=False)
    return net.eval(), args, weights


def convert_weights(src: str | Path, dst: str | Path, model: str | None = None, *,
                    strict: bool = False, classes: list[str] | None = None,
                    **overrides: Any) -> tuple[dict[str, Any], list[str]]:
    """Write ``src`` as a clean ``.safetensors`` file (our keys, every model key) with metadata:
    model name and arguments, classes, preprocessing (the source's, or the layout's preset),
    source sha256.

    Returns the metadata written and the model keys the file lacked (``strict=False`` keeps
    them as initialised; ``strict=True`` refuses such a file).  The output loads with
    ``resnetlab predict OUT`` and :func:`load_pretrained` without naming the model again.
    """
    from safetensors.torch import save_file

    dst = Path(dst)
    if dst.suffix != ".safetensors":
        raise ConfigError(f"{dst}: the output must end in .safetensors")
    net, args, weights = load_pretrained(src, model, strict=strict, **overrides)
    missing = [k for k in net.state_dict() if k not in weights.state]
    data = _layout_preprocessing(weights, args)
    classes = classes or weights.meta.get("classes") or (data or {}).get("classes")
    if classes is not None and len(classes) != args.get("num_classes", len(classes)):
        raise ConfigError(f"--classes: {len(classes)} names for a model with "
                          f"{args.get('num_classes')} outputs")
    meta = {"format": FORMAT, "format_version": 1, "model": args,
            "source": {"file": weights.path.name, "sha256": file_sha256(weights.path),
                       "layout": weights.layout}}
    if classes is not None:
        meta["classes"] = [str(c) for c in classes]
    if data is not None:
        meta["data"] = {**data, "classes": meta["classes"]} if "classes" in data else data
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(dst), metadata={"resnetlab": json.dumps(meta, sort_keys=True)})
    return meta, missing

