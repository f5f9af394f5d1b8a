"""Dense residual blocks and the MLP-ResNet, for vector inputs (or flattened images).

The MLP-ResNet::

    x -> stem: Dense(width) -> [block] x num_blocks -> fc
    block:  h -> act(h + branch(h)),  branch = Dropout -> Dense(bottleneck_width) -> Dense(width)

The stem's Dense is the only layer on the main path that no skip bypasses, so a 32-block
MLP-ResNet trains like a 32-block conv ResNet (issue 23: until then every block carried its
own ``Dense(width)`` in front of the skip, and a deep MLP-ResNet was a plain MLP in disguise).
The skip is an identity (``shortcut`` ``"A"``/``"B"``) or, with ``"C"``, a learned projection;
``residual=False`` drops the addition (the plain twin: the same layers, the same parameters).
Every Dense is followed by ``norm_layer`` (``None``: no norm) and, except the branch's last,
by ``act_layer``.

:class:`DenseResidualBlock` is the explainer's figure: the input first passes through a
Dense(1024), then one residual block (stem + :class:`DenseBlock` in one module).

For tables, ``embed_columns`` (``[[feature index, cardinality], ...]``, from the data's
``encoding="embed"``) turns integer-coded categorical features into learned embeddings before
the stem, and :func:`table_defaults` picks a width and regularisation for the table's size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from resnetlab.layers import (
    DropPath,
    LayerType,
    check_non_negative,
    check_positive,
    check_positive_int,
    check_rate,
    make_act,
    make_classifier,
    parse_shortcut,
    stochastic_depth_rates,
)
from resnetlab.models.blocks import ResidualBlock, check_plain_options
from resnetlab.utils.errors import ConfigError

__all__ = ["DenseBlock", "DenseResidualBlock", "MLPResNet", "CategoryEmbedding", "table_defaults"]


def table_defaults(num_rows: int) -> dict[str, float | int]:
    """MLP-ResNet arguments sized for a table of ``num_rows`` training rows.

    The 1024-wide default (9M parameters) overfits a few hundred rows (issue 11: 92% on a
    455-row table a logistic regression solves).  Width grows with about 4 sqrt(rows), rounded
    to a power of two in [64, 1024]; small tables get 2 blocks and more dropout.
    """
    width = int(min(1024, max(64, 2 ** round(math.log2(4 * math.sqrt(max(num_rows, 1)))))))
    small = num_rows < 5000
    return {"width": width, "bottleneck_width": width // 2, "num_blocks": 2 if small else 4,
            "drop_rate": 0.2 if small else 0.1}


class CategoryEmbedding(nn.Module):
    """Replace integer-coded feature columns by learned embeddings (``min(16, (card+1)//2)``
    wide, the usual rule of thumb for tabular embeddings); other columns pass through."""

    def __init__(self, in_features: int, columns: Sequence[Sequence[int]]):
        super().__init__()
        self.index = [int(i) for i, _ in columns]
        if any(not 0 <= i < in_features for i in self.index):
            raise ConfigError(f"embed_columns {list(columns)}: indices must be in [0, {in_features})")
        keep = [j for j in range(in_features) if j not in set(self.index)]
        self.register_buffer("keep", torch.tensor(keep, dtype=torch.long), persistent=False)
        self.tables = nn.ModuleList(nn.Embedding(int(card), min(16, (int(card) + 1) // 2))
                                    for _, card in columns)
        self.out_features = len(keep) + sum(t.embedding_dim for t in self.tables)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [x.index_select(1, self.keep)]
        for j, table in zip(self.index, self.tables, strict=True):
            # codes past the table (a value unseen at fit time) clamp to the reserved last slot
            codes = x[:, j].round().long().clamp(0, table.num_embeddings - 1)
            parts.append(table(codes).to(x.dtype))
        return torch.cat(parts, dim=1)


def _dense(in_features: int, out_features: int, norm_layer: LayerType | None):
    """``Linear`` and its norm; the norm's shift makes a Linear bias redundant."""
    norm = norm_layer(out_features) if norm_layer is not None else nn.Identity()
    return nn.Linear(in_features, out_features, bias=norm_layer is None), norm


class DenseBlock(ResidualBlock):
    """``act(x + branch(x))``, ``branch = Dropout -> Dense(bottleneck) -> Dense(width)``: purely
    residual, ``width`` in and out (see the module docstring).

    Hook points as in the conv blocks: ``drop_path`` sees the branch, ``downsample`` the skip.
    """

    kind = "dense"

    def __init__(self, width: int = 1024, bottleneck_width: int = 512, *,
                 drop_rate: float = 0.0, shortcut: str | None = "B", residual: bool = True,
                 norm_layer: LayerType | None = nn.BatchNorm1d, act_layer: LayerType = nn.ReLU,
                 drop_path: float = 0.0):
        super().__init__(width, width, 1, shortcut=shortcut, residual=residual,
                         drop_path=drop_path)
        self.dropout = nn.Dropout(check_rate("drop_rate", drop_rate))
        self.fc1, self.norm1 = _dense(width, bottleneck_width, norm_layer)
        self.act1 = make_act(act_layer)
        self.fc2, self.norm2 = _dense(bottleneck_width, width, norm_layer)
        self.drop_path = DropPath(drop_path)
        self.downsample = self._dense_skip(width, norm_layer)
        self.act_out = make_act(act_layer, inplace=False)  # a plain twin's input is hooked

    def _dense_skip(self, width: int, norm_layer: LayerType | None) -> nn.Module | None:
        if self.shortcut == "none":
            return None
        if self.shortcut == "C":  # a projection on every block, as option C for convs
            return nn.Sequential(*_dense(width, width, norm_layer))
        return nn.Identity()  # A and B: the shapes never change inside the block

    def _last_layer(self) -> nn.Module:
        has_scale = isinstance(getattr(self.norm2, "weight", None), torch.Tensor)
        return self.norm2 if has_scale else self.fc2

    @torch.no_grad()
    def zero_init_last(self) -> None:
        """Zero the last norm's scale (or, without a norm, the last Dense's weight and bias)."""
        last = self._last_layer()
        last.weight.zero_()
        if last is self.fc2 and self.fc2.bias is not None:
            self.fc2.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.norm1(self.fc1(self.dropout(x))))
        out = self.drop_path(self.norm2(self.fc2(out)))
        return self.act_out(self._add_skip(out, x))


class DenseResidualBlock(DenseBlock):
    """The explainer's figure, the "seed" of the MLP-ResNet: the input first passes through a
    Dense(1024) layer, then one residual block: ``h = act(norm(Dense(width)(x)))``, then
    ``act(h + branch(h))``.  It is a stem and a :class:`DenseBlock` in one module.

    Stack :class:`MLPResNet` rather than these: each one puts a Dense outside the skip, so N of
    them in a row are N un-skipped layers on the main path (issue 23).
    """

    def __init__(self, in_features: int, width: int = 1024, bottleneck_width: int = 512, *,
                 drop_rate: float = 0.0, shortcut: str | None = "B", residual: bool = True,
                 norm_layer: LayerType | None = nn.BatchNorm1d, act_layer: LayerType = nn.ReLU,
                 drop_path: float = 0.0):
        super().__init__(width, bottleneck_width, drop_rate=drop_rate, shortcut=shortcut,
                         residual=residual, norm_layer=norm_layer, act_layer=act_layer,
                         drop_path=drop_path)
        self.in_chs = in_features
        self.fc_in, self.norm_in = _dense(in_features, width, norm_layer)
        self.act_in = make_act(act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.act_in(self.norm_in(self.fc_in(x))))


class MLPResNet(nn.Module):
    """Input projection (``stem``, the one Dense no skip bypasses), ``num_blocks`` purely
    residual :class:`DenseBlock` s (``layer1``), ``fc``.

    Any input ``(N, ...)`` is flattened to ``(N, in_features)``, so ``in_features=784`` trains on
    28x28 images directly.  ``residual=False`` is the plain twin (same layers, no additions).
    """

    def __init__(self, in_features: int = 784, num_classes: int = 10, *, num_blocks: int = 4,
                 width: int = 1024, bottleneck_width: int = 512, width_mult: float = 1.0,
                 drop_rate: float = 0.1, drop_path_rate: float = 0.0,
                 zero_init_last: bool = False, residual: bool = True, shortcut: str | None = "B",
                 norm_layer: LayerType | None = nn.BatchNorm1d, act_layer: LayerType = nn.ReLU,
                 embed_columns: Sequence[Sequence[int]] = ()):
        super().__init__()
        self.in_features = check_positive_int("in_features", in_features)
        self.embed = CategoryEmbedding(in_features, embed_columns) if embed_columns else None
        check_positive_int("num_blocks", num_blocks)
        check_positive("width_mult", width_mult)
        width = max(1, round(check_positive_int("width", width) * width_mult))
        bottleneck_width = max(1, round(check_positive_int("bottleneck_width", bottleneck_width)
                                        * width_mult))
        self.shortcut = parse_shortcut(shortcut) if residual else "none"
        self.residual = self.shortcut != "none"
        check_plain_options(self.residual, drop_path_rate, zero_init_last)
        self.block_type, self.default_input_size = "dense", (in_features,)
        stem_in = self.embed.out_features if self.embed is not None else in_features
        self.stem = nn.Sequential(*_dense(stem_in, width, norm_layer), make_act(act_layer))
        rates = stochastic_depth_rates(drop_path_rate, num_blocks)
        self.layer1 = nn.Sequential(*(
            DenseBlock(width, bottleneck_width, drop_rate=drop_rate,
                               shortcut=self.shortcut, residual=self.residual,
                               norm_layer=norm_layer, act_layer=act_layer, drop_path=rate)
            for rate in rates))
        self.stage_names = ["layer1"]
        self.num_features = width
        self.num_classes = check_non_negative("num_classes", num_classes)
        self.fc = make_classifier(width, num_classes)
        self._init_weights(zero_init_last)

    def _init_weights(self, zero_init_last: bool) -> None:
        for m in [*self.stem.modules(), *self.layer1.modules()]:
            if isinstance(m, nn.Linear) and not m.weight.is_meta:  # meta: nothing to set
                # He et al. 2015 init keeps the ReLU signal's scale even without a norm layer
                # (PyTorch's default shrinks it ~2.5x per layer, which starves a plain MLP).
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if zero_init_last:
            for b in self.blocks():
                b.zero_init_last()

    def blocks(self) -> list[DenseBlock]:
        """The residual blocks in forward order."""
        return list(self.layer1)

    def named_stages(self) -> list[tuple[str, nn.Module]]:
        """``[("stem", ...), ("layer1", ...), ("fc", ...)]`` in forward order."""
        return [("stem", self.stem), ("layer1", self.layer1), ("fc", self.fc)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Flatten, project, run the blocks: ``(N, ...) -> (N, num_features)``."""
        x = x.flatten(1)
        # Skipped while tracing (ONNX export): the traced shape is fixed by the example input.
        if not torch.jit.is_tracing() and x.shape[1] != self.in_features:
            raise ConfigError(
                f"input has {x.shape[1]} features per sample (shape {tuple(x.shape)}), but the "
                f"model was built with in_features={self.in_features}; rebuild with "
                f"in_features={x.shape[1]}")
        if self.embed is not None:
            x = self.embed(x)
        return self.layer1(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The classifier; ``pre_logits=True`` returns the features unchanged."""
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh ``fc`` for ``num_classes`` (0: none; the model returns its features)."""
        self.num_classes = check_non_negative("num_classes", num_classes)
        ref = next(self.parameters())
        self.fc = make_classifier(self.num_features, num_classes).to(ref.device, ref.dtype)
