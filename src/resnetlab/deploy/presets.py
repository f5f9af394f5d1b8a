"""Preprocessing presets for inputs whose network carries no preprocessing of its own: bare
weights (``predict weights.safetensors --model resnet18``) and foreign ``.onnx`` files.

A preset is a data meta in the same format the data layer saves with a run (``kind``,
``in_chans``, ``image_size``, ``mean``, ``std``, ``classes``), so everything downstream of it is
the ordinary prediction path.
"""

from __future__ import annotations

from typing import Any

from resnetlab.data import dataset_info
from resnetlab.utils.errors import ConfigError

__all__ = ["PRESETS", "preset_meta", "preset_for_family", "check_meta_fits"]

# Channel statistics of the training sets, as published with them and used by torchvision
# (ImageNet), and as computed over the 50k/60k training images (CIFAR-10, Fashion-MNIST).
PRESETS: dict[str, dict[str, Any]] = {
    # torchvision's reference evaluation: short side to 256, centre crop 224 (crop ratio 0.875)
    "imagenet": {"in_chans": 3, "image_size": [224, 224], "resize_short": 256,
                 "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    "cifar10": {"in_chans": 3, "image_size": [32, 32],
                "mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616]},
    "fashion-mnist": {"in_chans": 1, "image_size": [28, 28], "mean": [0.2860], "std": [0.3530]},
}


def preset_meta(name: str, num_classes: int | None = None) -> dict[str, Any]:
    """The data meta of preset ``name`` (class names when the data set's are known and fit)."""
    if name not in PRESETS:
        raise ConfigError(f"preset {name!r}: choose one of {', '.join(PRESETS)}")
    short = PRESETS[name].get("resize_short")
    resize = f"short side to {short}, bilinear, centre crop" if short else "cover, bilinear, centre crop"
    meta = {"kind": "image", "name": f"preset:{name}", "preset": name, "resize": resize,
            **PRESETS[name]}
    classes: list[str] = []
    if name != "imagenet":  # ImageNet's 1000 names are not shipped: indices are printed
        classes = list(dataset_info(name).classes)
    if num_classes is not None and len(classes) != num_classes:
        classes = [str(i) for i in range(num_classes)]
    meta["classes"] = classes
    return meta


def preset_for_family(family: str | None, in_chans: int | None,
                      num_classes: int | None) -> dict[str, Any] | None:
    """ImageNet family -> the ImageNet preset; CIFAR/wide family -> CIFAR-10 (3 channels) or
    Fashion-MNIST (1 channel); anything else (tables) -> None."""
    if family == "imagenet" and in_chans in (None, 3):
        return preset_meta("imagenet", num_classes)
    if family in ("cifar", "wide", "preact"):
        return preset_meta("fashion-mnist" if in_chans == 1 else "cifar10", num_classes)
    return None


def check_meta_fits(meta: dict[str, Any], in_chans: int | None, num_classes: int | None,
                    what: str) -> None:
    """One line when a data set's channels or classes cannot feed the network ``what``."""
    if meta.get("kind") == "image" and in_chans and meta.get("in_chans") not in (None, in_chans):
        raise ConfigError(f"{what} takes {in_chans}-channel images but {meta.get('name')} has "
                          f"{meta['in_chans']}; pass the data set the weights were trained on")
    classes = meta.get("classes") or []
    if num_classes and classes and len(classes) != num_classes:
        raise ConfigError(f"{what} has {num_classes} outputs but {meta.get('name')} has "
                          f"{len(classes)} classes; pass the data set the weights were trained on")
