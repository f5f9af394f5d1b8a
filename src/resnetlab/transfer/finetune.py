"""Fine-tuning policies: what to copy from a pretrained network, what to freeze, how BN behaves.

Every function works on the model interface of DESIGN.md (``named_stages()`` from the input,
``get_classifier()``, ``reset_classifier()``), never on attribute spelling, so the same policy
applies to CIFAR and ImageNet ResNets and to the MLP-ResNet.

* :func:`transplant` copies a source state_dict into a network built for the new data: the head
  is kept only when the class lists are equal, the first layer is adapted between RGB and
  grayscale (filters summed or replicated, scaled), and each change is one notice line.
* :func:`freeze` (``none | stem | stages:K | backbone``, counted from the input) turns
  ``requires_grad`` off; :func:`freeze_bn` keeps BatchNorm in eval mode with fixed gamma/beta.
* :func:`lr_scales` names a learning-rate scale per parameter (head 1, backbone
  ``backbone_lr_scale``), passed to the optimiser builder as its ``lr_scales``.
* :func:`reestimate_bn` recomputes BN running statistics on the new data before training.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from resnetlab.utils.errors import ConfigError

__all__ = ["FREEZE_CHOICES", "BN_CHOICES", "parse_freeze", "frozen_stage_names", "freeze",
           "unfreeze", "freeze_bn", "lr_scales", "reestimate_bn", "adapt_first_weight",
           "transplant", "head_param_names"]

FREEZE_CHOICES = "none, stem, stages:K or backbone"
BN_CHOICES = ("train", "frozen")
_BN = nn.modules.batchnorm._BatchNorm


def parse_freeze(spec: str) -> str | int:
    """``"none"``/``"stem"``/``"backbone"``, or K (an int >= 0) for ``"stages:K"``."""
    spec = str(spec).strip()
    if spec in ("none", "stem", "backbone"):
        return spec
    if spec.startswith("stages:"):
        count = spec.split(":", 1)[1]
        if count.isdigit():
            return int(count)
    raise ConfigError(f"--freeze {spec!r}: choose {FREEZE_CHOICES} (K counts stages from the input)")


def _backbone_stages(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``named_stages()`` without the classifier (stem first)."""
    head = model.get_classifier()
    return [(n, m) for n, m in model.named_stages() if m is not head]


def frozen_stage_names(model: nn.Module, spec: str) -> list[str]:
    """Stage names ``spec`` freezes.  ``stages:K`` freezes the stem and the first K stages
    (``stages:0`` is ``stem``); ``backbone`` is everything but the head."""
    choice, stages = parse_freeze(spec), _backbone_stages(model)
    if choice == "none":
        return []
    if choice == "stem":
        return [stages[0][0]]
    if choice == "backbone":
        return [n for n, _ in stages]
    if choice > len(stages) - 1:
        raise ConfigError(f"--freeze stages:{choice}: the network has {len(stages) - 1} stages "
                          f"after its stem ({', '.join(n for n, _ in stages[1:])})")
    return [n for n, _ in stages[: choice + 1]]


def _params_of(model: nn.Module, stage_names: Iterable[str]) -> set[int]:
    wanted = set(stage_names)
    return {id(p) for n, m in model.named_stages() if n in wanted for p in m.parameters()}


def freeze(model: nn.Module, spec: str) -> list[str]:
    """Turn off gradients of the stages ``spec`` names; returns the frozen parameter names."""
    ids = _params_of(model, frozen_stage_names(model, spec))
    frozen = []
    for name, p in model.named_parameters():
        if id(p) in ids:
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


def unfreeze(model: nn.Module, names: Iterable[str], *, keep_bn_frozen: bool) -> None:
    """Gradual unfreezing: gradients back on for ``names`` (BN affine stays off when
    ``keep_bn_frozen``, since ``--bn frozen`` holds for the whole run)."""
    bn_params = {id(p) for m in model.modules() if isinstance(m, _BN) for p in m.parameters()}
    wanted = set(names)
    for name, p in model.named_parameters():
        if name in wanted and not (keep_bn_frozen and id(p) in bn_params):
            p.requires_grad_(True)


def _eval_mode(module: nn.Module, args: Any) -> None:
    # A forward pre-hook (not an overridden train()) survives model.train(), deepcopy (EMA)
    # and DDP: running statistics are used and never updated.
    module.training = False


def freeze_bn(model: nn.Module) -> int:
    """``--bn frozen``: every BatchNorm uses its running statistics and its gamma/beta get no
    gradient, in training too.  Returns how many BN layers were frozen."""
    count = 0
    for m in model.modules():
        if isinstance(m, _BN):
            m.register_forward_pre_hook(_eval_mode)
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)
            count += 1
    return count


def head_param_names(model: nn.Module) -> list[str]:
    """Parameter names of the classifier (``get_classifier()``)."""
    head = model.get_classifier()
    ids = {id(p) for p in head.parameters()} if head is not None else set()
    return [n for n, p in model.named_parameters() if id(p) in ids]


def lr_scales(model: nn.Module, backbone_lr_scale: float) -> dict[str, float]:
    """``{parameter name: lr scale}``: 1 for the head, ``backbone_lr_scale`` for the rest."""
    head = set(head_param_names(model))
    return {n: 1.0 if n in head else float(backbone_lr_scale) for n, _ in model.named_parameters()}


@torch.no_grad()
def reestimate_bn(model: nn.Module, batches: Iterable, max_batches: int = 50) -> int:
    """Recompute every BN layer's running mean/variance on ``batches`` (forward only).

    Uses a cumulative average (``momentum=None``) so each batch counts equally, as in
    SWA's ``update_bn`` (Izmailov et al. 2018).  Returns the number of batches used.
    """
    bns = [m for m in model.modules() if isinstance(m, _BN)]
    if not bns:
        return 0
    momenta = [m.momentum for m in bns]
    was_training = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    device = next(model.parameters()).device
    used = 0
    for x, _ in batches:
        if used >= max_batches:
            break
        model(x.to(device))
        used += 1
    for m, momentum in zip(bns, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)
    return used


def adapt_first_weight(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """A first-conv weight for ``in_chans`` input channels.

    RGB -> grayscale sums the filters over channels (a gray image replicated to RGB gives the
    same response); grayscale -> RGB replicates the filter and divides by the channel count
    (an RGB image of equal channels gives the same response).
    """
    have = weight.shape[1]
    if have == in_chans:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    if have == 1:
        return weight.repeat(1, in_chans, *([1] * (weight.ndim - 2))) / in_chans
    raise ConfigError(f"the pretrained network reads {have} channels and the data has "
                      f"{in_chans}; only 1 <-> N channels can be adapted")


def _first_weight_name(model: nn.Module) -> str:
    """The first >= 2-D weight (stem conv or input Dense) in definition order."""
    return next(k for k, v in model.state_dict().items() if v.ndim >= 2)


def transplant(model: nn.Module, state: Mapping[str, torch.Tensor], *,
               source_classes: list[str], classes: list[str]) -> list[str]:
    """Copy ``state`` into ``model`` (built for the new data); returns one notice per change.

    The head is copied only when the class lists are equal; the first conv is adapted between
    1 and N channels.  Any other missing or mis-shaped key is a :class:`ConfigError`.
    """
    own, notices = model.state_dict(), []
    head = {n for n in own if n.rsplit(".", 1)[0] in
            {h.rsplit(".", 1)[0] for h in head_param_names(model)}}
    keep_head = [str(c) for c in source_classes] == [str(c) for c in classes]
    if not keep_head:
        notices.append(f"replacing the head: {_names(source_classes)} -> {_names(classes)}")
    first = _first_weight_name(model)
    out = {}
    for key, value in own.items():
        if key in head and not keep_head:
            out[key] = value
            continue
        if key not in state:
            raise ConfigError(f"the pretrained weights have no {key!r}; they are not a "
                              f"{type(model).__name__} of this shape")
        got = state[key]
        if key == first and got.ndim == 4 and got.shape[1] != value.shape[1]:
            got = adapt_first_weight(got, value.shape[1])
            how = "summed" if value.shape[1] == 1 else "replicated and scaled"
            notices.append(f"adapting the first convolution from {state[key].shape[1]} to "
                           f"{value.shape[1]} input channels (filters {how})")
        if got.shape != value.shape:
            raise ConfigError(f"pretrained {key} has shape {tuple(got.shape)} but the network "
                              f"needs {tuple(value.shape)}")
        out[key] = got.to(value.dtype)
    model.load_state_dict(out)
    return notices


def _names(classes: list[str], limit: int = 10) -> str:
    shown = ", ".join(str(c) for c in classes[:limit])
    return f"{len(classes)} classes ({shown}{', ...' if len(classes) > limit else ''})"
