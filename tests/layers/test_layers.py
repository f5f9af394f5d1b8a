"""Building blocks: conv-norm-act, shortcuts A/B/C/none, stochastic depth, pooling, head."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resnetlab.layers import (
    ConvNormAct,
    DropPath,
    GlobalPool,
    ProjectionShortcut,
    ZeroPadShortcut,
    create_pool2d,
    make_act,
    make_classifier,
    make_shortcut,
    parse_shortcut,
    stochastic_depth_rates,
)
from resnetlab.layers.conv import SubsampledConv1x1
from resnetlab.utils.errors import ConfigError


@pytest.mark.parametrize("kernel, stride, size, out_size", [(3, 1, 9, 9), (3, 2, 9, 5),
                                                             (7, 2, 224, 112), (1, 2, 8, 4)])
def test_conv_norm_act_kernel_and_stride(kernel, stride, size, out_size):
    layer = ConvNormAct(3, 8, kernel, stride)
    assert layer(torch.randn(2, 3, size, size)).shape == (2, 8, out_size, out_size)
    conv, norm, act = layer
    assert conv.kernel_size == (kernel, kernel) and conv.bias is None  # BN's shift replaces it
    assert isinstance(norm, nn.BatchNorm2d) and isinstance(act, nn.ReLU)


def test_conv_norm_act_optional_parts():
    bare = ConvNormAct(3, 4, 3, norm_layer=None, act_layer=None)
    assert len(bare) == 1 and bare[0].bias is not None
    assert (ConvNormAct(3, 4, act_layer=nn.GELU)(torch.randn(1, 3, 5, 5)) < 0).any()


def test_make_act_inplace_only_where_supported():
    assert make_act(nn.ReLU).inplace and not make_act(nn.ReLU, inplace=False).inplace
    assert isinstance(make_act(nn.GELU), nn.GELU)
    assert isinstance(make_act(None), nn.Identity)


# -- shortcuts --------------------------------------------------------------------------

def test_option_a_subsamples_and_zero_pads():
    x = torch.randn(2, 16, 8, 8)
    out = ZeroPadShortcut(16, 32, stride=2)(x)
    assert out.shape == (2, 32, 4, 4)
    torch.testing.assert_close(out[:, :16], x[:, :, ::2, ::2])
    assert torch.count_nonzero(out[:, 16:]) == 0
    assert sum(p.numel() for p in ZeroPadShortcut(16, 32, 2).parameters()) == 0


def test_option_a_keeps_channels_last_and_matches_strided_conv_grid():
    x = torch.randn(2, 16, 7, 7).to(memory_format=torch.channels_last)
    out = ZeroPadShortcut(16, 32, 2)(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    conv = nn.Conv2d(16, 16, 3, 2, 1)
    assert out.shape[-2:] == conv(x).shape[-2:]  # 7 -> 4 either way


def test_option_a_cannot_shrink_channels():
    with pytest.raises(ConfigError, match="cannot shrink channels from 64 to 32"):
        ZeroPadShortcut(64, 32)


@pytest.mark.parametrize("kind, in_chs, out_chs, stride, expected", [
    ("A", 16, 16, 1, nn.Identity), ("A", 16, 32, 2, ZeroPadShortcut),
    ("B", 16, 16, 1, nn.Identity), ("B", 16, 32, 2, ProjectionShortcut),
    ("B", 16, 16, 2, ProjectionShortcut), ("C", 16, 16, 1, ProjectionShortcut),
    ("none", 16, 32, 2, type(None)),
])
def test_make_shortcut_per_option(kind, in_chs, out_chs, stride, expected):
    skip = make_shortcut(kind, in_chs, out_chs, stride)
    assert type(skip) is expected
    if skip is not None:
        assert skip(torch.randn(2, in_chs, 8, 8)).shape == (2, out_chs, 8 // stride, 8 // stride)


def test_projection_layouts_torchvision_and_resnet_d():
    plain = ProjectionShortcut(64, 256, 2)
    # A strided 1x1 is an nn.Conv2d subclass that subsamples first (a oneDNN bug, issue 7).
    assert [type(m) for m in plain] == [SubsampledConv1x1, nn.BatchNorm2d]
    assert plain[0].stride == (2, 2) and plain[0].bias is None
    avg = ProjectionShortcut(64, 256, 2, avg_down=True)
    assert [type(m) for m in avg] == [nn.AvgPool2d, nn.Conv2d, nn.BatchNorm2d]
    assert avg[1].stride == (1, 1)
    assert avg(torch.randn(1, 64, 7, 7)).shape == (1, 256, 4, 4)  # ceil mode: same as a conv
    assert [type(m) for m in ProjectionShortcut(8, 16, norm_layer=None)] == [nn.Conv2d]


def test_parse_shortcut_and_its_errors():
    assert [parse_shortcut(v) for v in ("a", "B", "c", "none", "None", None)] == \
        ["A", "B", "C", "none", "none", "none"]
    with pytest.raises(ConfigError, match="shortcut='D'.*'A', 'B', 'C' or 'none'"):
        parse_shortcut("D")
    with pytest.raises(ConfigError, match="avg_down"):
        make_shortcut("A", 16, 32, 2, avg_down=True)


# -- stochastic depth -------------------------------------------------------------------------

def test_drop_path_drops_whole_samples_and_keeps_the_mean():
    torch.manual_seed(0)
    layer = DropPath(0.25).train()
    x = torch.ones(4000, 3, 2, 2)
    out = layer(x)
    per_sample = out.flatten(1)
    assert per_sample.unique().tolist() == pytest.approx([0.0, 1 / 0.75])
    assert (per_sample.min(1).values == per_sample.max(1).values).all()  # all or nothing
    assert abs((per_sample[:, 0] == 0).float().mean().item() - 0.25) < 0.03
    assert abs(out.mean().item() - 1.0) < 0.05
    assert torch.equal(layer.eval()(x), x)
    assert DropPath(0.0).train()(x) is x


def test_drop_path_rate_must_be_a_probability():
    for bad in (1.0, -0.1, 2):
        with pytest.raises(ConfigError, match="drop_path_rate"):
            DropPath(bad)


def test_stochastic_depth_rates_are_linear_in_depth():
    assert stochastic_depth_rates(0.1, 4) == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert stochastic_depth_rates(0.0, 3) == [0.0, 0.0, 0.0]


# -- pooling and head -------------------------------------------------------------------------

def test_global_pool_kinds():
    x = torch.arange(8.0).reshape(1, 2, 2, 2)
    assert GlobalPool("avg")(x).tolist() == [[1.5, 5.5]]
    assert GlobalPool("max")(x).tolist() == [[3.0, 7.0]]
    assert GlobalPool("avgmax")(x).tolist() == [[2.25, 6.25]]
    with pytest.raises(ConfigError, match="global_pool='median'"):
        GlobalPool("median")


def test_create_pool2d_max_and_avg():
    x = torch.ones(1, 1, 4, 4)
    assert create_pool2d("max", 3, 2, 1)(x).shape == (1, 1, 2, 2)
    # Border windows average only real pixels (count_include_pad=False): still exactly 1.
    assert torch.equal(create_pool2d("avg", 3, 2, 1)(x), torch.ones(1, 1, 2, 2))
    with pytest.raises(ConfigError, match="pool_type"):
        create_pool2d("min", 2)


def test_make_classifier():
    assert make_classifier(64, 10)(torch.randn(2, 64)).shape == (2, 10)
    assert isinstance(make_classifier(64, 0), nn.Identity)
    with pytest.raises(ConfigError, match="num_classes"):
        make_classifier(64, -1)
