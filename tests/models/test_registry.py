"""The registry: names, tags, builders' shared keyword arguments, unknown names."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import resnetlab
from resnetlab.models.registry import UnknownModelError
from resnetlab.utils.errors import ConfigError, UserError

ALL = resnetlab.list_models()

REQUIRED = (
    [f"resnet{d}" for d in (20, 32, 44, 56, 110, 1202)]
    + [f"plain{d}" for d in (20, 32, 44, 56, 110, 1202)]
    + [f"preact_resnet{d}" for d in (20, 56, 110, 164, 1001)]
    + [f"resnet{d}" for d in (18, 34, 50, 101, 152)]
    + [f"plain{d}" for d in (18, 34, 50, 101, 152)]
    + [f"preact_resnet{d}" for d in (18, 34, 50, 101, 152)]
    + ["resnet18d", "resnet34d", "resnet50d", "resnet101d", "wrn16_8", "wrn28_10", "wrn40_4",
       "mlp_resnet", "plain_mlp"]
)


def _meta(name, **kwargs):
    with torch.device("meta"):
        return resnetlab.create_model(name, **kwargs)


def test_every_required_name_is_registered():
    assert sorted(set(REQUIRED) - set(ALL)) == []


def test_list_models_globs_and_sorts():
    assert resnetlab.list_models("wrn*") == ["wrn16_8", "wrn28_10", "wrn40_4"]
    assert resnetlab.list_models("plain5*") == ["plain50", "plain56"]
    assert len(ALL) == len(set(ALL))
    # natural order, as in the papers' tables: 20 < 56 < 110 < 1202
    cifar = [n for n in resnetlab.list_models("resnet*") if n in {"resnet20", "resnet56", "resnet110", "resnet1202"}]
    assert cifar == ["resnet20", "resnet56", "resnet110", "resnet1202"]
    assert resnetlab.list_models("no-such-*") == []


def test_unknown_name_lists_close_matches_on_one_line():
    with pytest.raises(UnknownModelError) as err:
        resnetlab.create_model("resnet5")
    message = str(err.value)
    assert "resnet50" in message and "resnet56" in message and "\n" not in message
    assert isinstance(err.value, UserError) and isinstance(err.value, KeyError)


@pytest.mark.parametrize("name", ALL)
def test_tags_describe_the_built_model(name):
    info = resnetlab.model_info(name)
    assert info["family"] in {"cifar", "imagenet", "wide", "mlp"}
    assert info["input_kind"] in {"image", "vector"}
    assert info["block"] in {"basic", "bottleneck", "preact_basic", "preact_bottleneck", "dense"}
    model = _meta(name)
    assert model.block_type == info["block"]
    assert model.residual is info["residual"]
    assert model.default_input_size == info["input_size"]
    assert all(b.kind == info["block"] for b in model.blocks())
    expected_classes = 1000 if info["family"] == "imagenet" else 10
    assert model.num_classes == expected_classes
    assert model.build_args == {"name": name}


def _common_kwargs(name: str) -> dict:
    """The keyword arguments every builder accepts (DESIGN decisions), with non-defaults."""
    info = resnetlab.model_info(name)
    kwargs = dict(num_classes=7, drop_rate=0.2, width_mult=0.5, act_layer=nn.SiLU,
                  residual=info["residual"], shortcut="C")
    if info["input_kind"] == "vector":
        kwargs.update(in_features=12, norm_layer=nn.LayerNorm)
    else:
        kwargs.update(in_chans=1, norm_layer=nn.BatchNorm2d)
    if info["residual"]:
        kwargs.update(drop_path_rate=0.1, zero_init_last=True)
    if info["family"] == "imagenet":
        kwargs.update(variant="v1", deep_stem=True, avg_down=True)
    return kwargs


@pytest.mark.parametrize("name", ALL)
def test_every_builder_accepts_the_shared_options(name):
    kwargs = _common_kwargs(name)
    model = _meta(name, **kwargs)
    assert model.num_classes == 7 and model.fc.out_features == 7
    assert model.build_args == {"name": name, **kwargs}
    assert any(isinstance(m, nn.SiLU) for m in model.modules())
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    first = next(m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert (first.in_channels if isinstance(first, nn.Conv2d) else first.in_features) == \
        (12 if "in_features" in kwargs else 1)
    if kwargs["residual"]:
        assert all(b.shortcut == "C" for b in model.blocks())
        assert model.blocks()[-1].drop_path.p == pytest.approx(0.1)
    assert isinstance(model.head_drop if hasattr(model, "head_drop") else model.blocks()[0].dropout,
                      nn.Dropout)


def test_plain_aliases_are_the_residual_false_builders():
    for name in [n for n in ALL if resnetlab.model_info(n)["residual"] is False]:
        model = _meta(name)
        assert not model.residual and all(not b.residual for b in model.blocks())
        twin = name.replace("plain_mlp", "mlp_resnet").replace("plain_", "").replace(
            "plain", "resnet")
        assert twin in ALL, f"{name} has no residual counterpart"
        assert list(model.state_dict()) == list(_meta(twin, residual=False).state_dict())


def test_unknown_keyword_is_a_config_error_listing_accepted_ones():
    with pytest.raises(ConfigError, match=r"resnet20: unknown argument 'num_class'.*num_classes"):
        resnetlab.create_model("resnet20", num_class=10)
    with pytest.raises(ConfigError, match="in_chans"):
        resnetlab.create_model("mlp_resnet", in_chans=1)  # MLPs take in_features
