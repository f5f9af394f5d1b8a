"""The model zoo: every registered model runs, learns, counts right and keeps its promises."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import resnetlab
from resnetlab.models import MLPResNet, ResNet, count_parameters, model_summary
from resnetlab.models.blocks import Bottleneck
from resnetlab.utils.errors import ConfigError

ALL = resnetlab.list_models()
HUGE = {"resnet1202", "plain1202", "preact_resnet1001"}  # > 1000 layers: batch 1, marked slow


def _meta(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return resnetlab.create_model(name, **kwargs)


def _input(name: str, batch: int = 2, **kwargs) -> torch.Tensor:
    """A small input: CIFAR/WRN at 32x32, ImageNet models at 64x64 (not 224), vectors as is."""
    info = resnetlab.model_info(name)
    size = info["input_size"]
    if info["family"] == "imagenet":
        size = (size[0], 64, 64)
    gen = torch.Generator().manual_seed(0)
    return torch.randn(batch, *size, generator=gen)


# -- every registered model: forward shape, finite, gradients ---------------------------------

def _params_for_all():
    return [pytest.param(n, marks=pytest.mark.slow) if n in HUGE else n for n in ALL]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors on a shared 2-core machine: one intra-op thread avoids OpenMP spin-waits
    (measured 10x faster for plain110 under load).  Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# A 1202-layer net without skips has exploding gradients (about x1.2 per block in plain110):
# its early-layer gradients overflow to inf/NaN.  That is the phenomenon the plain twin exists
# to show, so for it we assert the explosion instead of finite gradients.
EXPLODING = {"plain1202"}


def _first_last_grad_norm(model):
    blocks = model.blocks()
    return blocks[0].conv1.weight.grad.norm(), blocks[-1].conv1.weight.grad.norm()


@pytest.mark.parametrize("name", _params_for_all())
def test_forward_backward_every_model(name):
    torch.manual_seed(0)
    model = resnetlab.create_model(name)
    x = _input(name, batch=1 if name in HUGE else 2)
    out = model(x)
    assert out.shape == (x.shape[0], model.num_classes)
    assert torch.isfinite(out).all()
    F.cross_entropy(out, torch.arange(x.shape[0]) % model.num_classes).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    if name in EXPLODING:
        first, last = _first_last_grad_norm(model)
        assert torch.isfinite(last) and (not torch.isfinite(first) or first / last > 1e20)
        return
    bad = [n for n, p in model.named_parameters()
           if not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert bad == [], f"parameters with a zero or non-finite gradient: {bad[:5]}"
    if name == "resnet1202":  # the skips keep the same depth trainable
        first, last = _first_last_grad_norm(model)
        assert first / last < 1e4


# -- parameter counts: the papers and torchvision ----------------------------------------------

@pytest.mark.parametrize("name, millions, digits", [
    # He et al. 2015, table 6 (option A shortcuts).
    ("resnet20", 0.27, 2), ("resnet32", 0.46, 2), ("resnet44", 0.66, 2), ("resnet56", 0.85, 2),
    ("resnet110", 1.7, 1), ("resnet1202", 19.4, 1),
    # He et al. 2016, table 2 (pre-activation bottleneck).
    ("preact_resnet164", 1.7, 1),
    # Zagoruyko & Komodakis 2016, tables 1 and 4.
    ("wrn16_8", 11.0, 1), ("wrn28_10", 36.5, 1), ("wrn40_4", 8.9, 1),
])
def test_parameter_counts_match_papers(name, millions, digits):
    assert round(count_parameters(_meta(name)) / 1e6, digits) == millions


def test_preact_resnet1001_is_about_the_papers_size():
    # The paper rounds to 10.2M; BN parameters alone are 0.15M, so allow 2%.
    assert abs(count_parameters(_meta("preact_resnet1001")) / 10.2e6 - 1) < 0.02


@pytest.mark.parametrize("name, expected", [
    ("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032),
    ("resnet101", 44_549_160), ("resnet152", 60_192_808),
    # ResNet-D = ResNet + deep stem (3->32->32->64, +19,232 parameters); same as timm resnet*d.
    ("resnet18d", 11_708_744), ("resnet34d", 21_816_904), ("resnet50d", 25_576_264),
    ("resnet101d", 44_568_392),
])
def test_parameter_counts_match_torchvision(name, expected):
    assert count_parameters(_meta(name)) == expected


@pytest.mark.parametrize("name, gmacs", [("resnet34", 3.6), ("resnet50", 3.8),
                                         ("resnet101", 7.6), ("resnet152", 11.3)])
def test_macs_match_the_paper_for_v1(name, gmacs):
    # He et al. 2015, table 1 ("FLOPs" there are multiply-adds), with the original v1 strides.
    assert model_summary(name, variant="v1")["macs"] / 1e9 == pytest.approx(gmacs, rel=0.02)


def test_mlp_resnet_parameter_count_follows_its_layers():
    blocks, width, neck, inp, classes = 3, 64, 32, 20, 5
    model = resnetlab.create_model("mlp_resnet", in_features=inp, num_classes=classes,
                                   num_blocks=blocks, width=width, bottleneck_width=neck)
    bn = 2  # weight + bias per feature; the Linear layers before a BN have no bias
    # the stem's Dense is the only one outside the skips (issue 23): none inside the blocks
    per_block = (width * neck + bn * neck) + (neck * width + bn * width)
    expected = inp * width + bn * width + blocks * per_block + width * classes + classes
    assert count_parameters(model) == expected


# -- the plain twin ------------------------------------------------------------------------

TWINS = [("resnet20", "plain20"), ("resnet110", "plain110"), ("resnet18", "plain18"),
         ("resnet50", "plain50"), ("wrn16_8", "plain_wrn16_8"), ("mlp_resnet", "plain_mlp")]


class _AddCounter(TorchDispatchMode):
    """Counts aten.add calls (the residual addition) while active."""

    def __init__(self):
        super().__init__()
        self.adds = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten.add, torch.ops.aten.add_):
            self.adds += 1
        return func(*args, **(kwargs or {}))


def _adds_per_block(model: nn.Module, x: torch.Tensor) -> list[int]:
    counts = []

    def pre(module, args):
        module._counter = _AddCounter().__enter__()

    def post(module, args, out):
        module._counter.__exit__(None, None, None)
        counts.append(module._counter.adds)

    hooks = [h for b in model.blocks()
             for h in (b.register_forward_pre_hook(pre), b.register_forward_hook(post))]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return counts


@pytest.mark.parametrize("residual_name, plain_name", TWINS)
def test_plain_twin_has_no_addition(residual_name, plain_name):
    x = _input(residual_name)
    residual, plain = resnetlab.create_model(residual_name), resnetlab.create_model(plain_name)
    assert all(n >= 1 for n in _adds_per_block(residual, x))  # the probe sees the addition
    assert _adds_per_block(plain, x) == [0] * len(plain.blocks())
    assert all(not b.residual and b.downsample is None for b in plain.blocks())
    assert all(b.residual for b in residual.blocks())


@pytest.mark.parametrize("name", ["resnet56", "preact_resnet110", "mlp_resnet", "resnet20"])
def test_identity_shortcut_twin_has_exactly_the_same_parameters(name):
    kwargs = {"shortcut": "A"} if name != "mlp_resnet" else {}
    residual, plain = _meta(name, **kwargs), _meta(name, residual=False)
    shapes = {k: v.shape for k, v in residual.state_dict().items()}
    assert shapes == {k: v.shape for k, v in plain.state_dict().items()}


@pytest.mark.parametrize("name", ["resnet50", "resnet20", "wrn28_10"])
def test_projection_twin_lacks_exactly_the_projections(name):
    residual, plain = _meta(name, shortcut="B"), _meta(name, residual=False)
    projections = sum(count_parameters(b.downsample) for b in residual.blocks())
    assert projections > 0
    assert count_parameters(residual) - count_parameters(plain) == projections


def test_plain_alias_equals_builder_with_residual_false():
    alias, twin = _meta("plain50"), _meta("resnet50", residual=False)
    assert list(alias.state_dict()) == list(twin.state_dict())
    assert not alias.residual and alias.shortcut == "none"
    assert _meta("resnet20", shortcut="none").blocks()[0].residual is False


# -- zero-init-last: every block starts as its skip path -----------------------------------

ZERO_INIT = ["resnet20", "resnet18", "resnet50", "resnet50d", "preact_resnet20",
             "preact_resnet164", "preact_resnet18", "wrn16_8", "mlp_resnet"]


def _run_with_taps(model, x):
    """Per block: input, branch output (drop_path), skip output (downsample), block output."""
    taps: dict[nn.Module, dict] = {b: {} for b in model.blocks()}
    hooks = []
    for b, tap in taps.items():
        hooks += [
            b.register_forward_pre_hook(lambda m, a, tap=tap: tap.update(x=a[0].clone())),
            b.drop_path.register_forward_hook(lambda m, a, o, tap=tap: tap.update(branch=o)),
            b.downsample.register_forward_hook(lambda m, a, o, tap=tap: tap.update(skip=o)),
            b.register_forward_hook(lambda m, a, o, tap=tap: tap.update(out=o)),
        ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return taps


@pytest.mark.parametrize("name", ZERO_INIT)
@pytest.mark.parametrize("shortcut", ["A", "B", "C"])
def test_zero_init_last_makes_every_block_its_skip_path(name, shortcut):
    if shortcut == "A" and name.endswith("d"):
        pytest.skip("ResNet-D's average-pool downsampling is a projection shortcut")
    torch.manual_seed(0)
    model = resnetlab.create_model(name, zero_init_last=True, shortcut=shortcut).train()
    for b, tap in _run_with_taps(model, _input(name)).items():
        assert torch.count_nonzero(tap["branch"]) == 0
        x, out = tap["x"], tap["out"]
        if b.preact:  # no activation after the addition: the block is the skip itself
            expected_from_skip, expected_from_x = tap["skip"], x
        elif hasattr(b, "fc_in"):  # the seed block: the skip starts after its Dense(width)
            expected_from_skip = torch.relu(tap["skip"])
            expected_from_x = b.act_in(b.norm_in(b.fc_in(x)))
        else:  # post-activation: relu(x + 0)
            expected_from_skip, expected_from_x = torch.relu(tap["skip"]), torch.relu(x)
        torch.testing.assert_close(out, expected_from_skip)
        if x.shape == out.shape and shortcut != "C":
            torch.testing.assert_close(out, expected_from_x)


def test_zero_init_last_is_off_by_default_and_keeps_branches_alive():
    model = resnetlab.create_model("resnet20")
    taps = _run_with_taps(model, _input("resnet20"))
    assert all(torch.count_nonzero(t["branch"]) > 0 for t in taps.values())


def test_zero_init_preact_branch_recovers_after_one_step():
    # Zeroing a BN gamma in front of a ReLU would leave the branch dead forever; we zero the
    # last conv instead, which gets a gradient at once.
    model = resnetlab.create_model("preact_resnet20", zero_init_last=True)
    model(_input("preact_resnet20")).square().mean().backward()
    assert model.blocks()[0].conv2.weight.grad.abs().sum() > 0


# -- torchvision state_dict layout ---------------------------------------------------------

# torchvision.models.resnet18 / resnet50, module by module: name, kind, shape.  A BatchNorm2d
# contributes weight, bias, running_mean, running_var, num_batches_tracked.
TORCHVISION_RESNET18 = """
conv1                    conv 64 3 7 7
bn1                      bn   64
layer1.0.conv1           conv 64 64 3 3
layer1.0.bn1             bn   64
layer1.0.conv2           conv 64 64 3 3
layer1.0.bn2             bn   64
layer1.1.conv1           conv 64 64 3 3
layer1.1.bn1             bn   64
layer1.1.conv2           conv 64 64 3 3
layer1.1.bn2             bn   64
layer2.0.conv1           conv 128 64 3 3
layer2.0.bn1             bn   128
layer2.0.conv2           conv 128 128 3 3
layer2.0.bn2             bn   128
layer2.0.downsample.0    conv 128 64 1 1
layer2.0.downsample.1    bn   128
layer2.1.conv1           conv 128 128 3 3
layer2.1.bn1             bn   128
layer2.1.conv2           conv 128 128 3 3
layer2.1.bn2             bn   128
layer3.0.conv1           conv 256 128 3 3
layer3.0.bn1             bn   256
layer3.0.conv2           conv 256 256 3 3
layer3.0.bn2             bn   256
layer3.0.downsample.0    conv 256 128 1 1
layer3.0.downsample.1    bn   256
layer3.1.conv1           conv 256 256 3 3
layer3.1.bn1             bn   256
layer3.1.conv2           conv 256 256 3 3
layer3.1.bn2             bn   256
layer4.0.conv1           conv 512 256 3 3
layer4.0.bn1             bn   512
layer4.0.conv2           conv 512 512 3 3
layer4.0.bn2             bn   512
layer4.0.downsample.0    conv 512 256 1 1
layer4.0.downsample.1    bn   512
layer4.1.conv1           conv 512 512 3 3
layer4.1.bn1             bn   512
layer4.1.conv2           conv 512 512 3 3
layer4.1.bn2             bn   512
fc                       fc   1000 512
"""

TORCHVISION_RESNET50 = """
conv1                    conv 64 3 7 7
bn1                      bn   64
layer1.0.conv1           conv 64 64 1 1
layer1.0.bn1             bn   64
layer1.0.conv2           conv 64 64 3 3
layer1.0.bn2             bn   64
layer1.0.conv3           conv 256 64 1 1
layer1.0.bn3             bn   256
layer1.0.downsample.0    conv 256 64 1 1
layer1.0.downsample.1    bn   256
layer1.1.conv1           conv 64 256 1 1
layer1.1.bn1             bn   64
layer1.1.conv2           conv 64 64 3 3
layer1.1.bn2             bn   64
layer1.1.conv3           conv 256 64 1 1
layer1.1.bn3             bn   256
layer1.2.conv1           conv 64 256 1 1
layer1.2.bn1             bn   64
layer1.2.conv2           conv 64 64 3 3
layer1.2.bn2             bn   64
layer1.2.conv3           conv 256 64 1 1
layer1.2.bn3             bn   256
layer2.0.conv1           conv 128 256 1 1
layer2.0.bn1             bn   128
layer2.0.conv2           conv 128 128 3 3
layer2.0.bn2             bn   128
layer2.0.conv3           conv 512 128 1 1
layer2.0.bn3             bn   512
layer2.0.downsample.0    conv 512 256 1 1
layer2.0.downsample.1    bn   512
layer2.1.conv1           conv 128 512 1 1
layer2.1.bn1             bn   128
layer2.1.conv2           conv 128 128 3 3
layer2.1.bn2             bn   128
layer2.1.conv3           conv 512 128 1 1
layer2.1.bn3             bn   512
layer2.2.conv1           conv 128 512 1 1
layer2.2.bn1             bn   128
layer2.2.conv2           conv 128 128 3 3
layer2.2.bn2             bn   128
layer2.2.conv3           conv 512 128 1 1
layer2.2.bn3             bn   512
layer2.3.conv1           conv 128 512 1 1
layer2.3.bn1             bn   128
layer2.3.conv2           conv 128 128 3 3
layer2.3.bn2             bn   128
layer2.3.conv3           conv 512 128 1 1
layer2.3.bn3             bn   512
layer3.0.conv1           conv 256 512 1 1
layer3.0.bn1             bn   256
layer3.0.conv2           conv 256 256 3 3
layer3.0.bn2             bn   256
layer3.0.conv3           conv 1024 256 1 1
layer3.0.bn3             bn   1024
layer3.0.downsample.0    conv 1024 512 1 1
layer3.0.downsample.1    bn   1024
layer3.1.conv1           conv 256 1024 1 1
layer3.1.bn1             bn   256
layer3.1.conv2           conv 256 256 3 3
layer3.1.bn2             bn   256
layer3.1.conv3           conv 1024 256 1 1
layer3.1.bn3             bn   1024
layer3.2.conv1           conv 256 1024 1 1
layer3.2.bn1             bn   256
layer3.2.conv2           conv 256 256 3 3
layer3.2.bn2             bn   256
layer3.2.conv3           conv 1024 256 1 1
layer3.2.bn3             bn   1024
layer3.3.conv1           conv 256 1024 1 1
layer3.3.bn1             bn   256
layer3.3.conv2           conv 256 256 3 3
layer3.3.bn2             bn   256
layer3.3.conv3           conv 1024 256 1 1
layer3.3.bn3             bn   1024
layer3.4.conv1           conv 256 1024 1 1
layer3.4.bn1             bn   256
layer3.4.conv2           conv 256 256 3 3
layer3.4.bn2             bn   256
layer3.4.conv3           conv 1024 256 1 1
layer3.4.bn3             bn   1024
layer3.5.conv1           conv 256 1024 1 1
layer3.5.bn1             bn   256
layer3.5.conv2           conv 256 256 3 3
layer3.5.bn2             bn   256
layer3.5.conv3           conv 1024 256 1 1
layer3.5.bn3             bn   1024
layer4.0.conv1           conv 512 1024 1 1
layer4.0.bn1             bn   512
layer4.0.conv2           conv 512 512 3 3
layer4.0.bn2             bn   512
layer4.0.conv3           conv 2048 512 1 1
layer4.0.bn3             bn   2048
layer4.0.downsample.0    conv 2048 1024 1 1
layer4.0.downsample.1    bn   2048
layer4.1.conv1           conv 512 2048 1 1
layer4.1.bn1             bn   512
layer4.1.conv2           conv 512 512 3 3
layer4.1.bn2             bn   512
layer4.1.conv3           conv 2048 512 1 1
layer4.1.bn3             bn   2048
layer4.2.conv1           conv 512 2048 1 1
layer4.2.bn1             bn   512
layer4.2.conv2           conv 512 512 3 3
layer4.2.bn2             bn   512
layer4.2.conv3           conv 2048 512 1 1
layer4.2.bn3             bn   2048
fc                       fc   1000 2048
"""

_KEYS = {"conv": ["weight"], "fc": ["weight", "bias"],
         "bn": ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]}


def _expected_state(layout: str) -> list[tuple[str, tuple[int, ...]]]:
    state = []
    for line in layout.strip().splitlines():
        module, kind, *shape = line.split()
        dims = tuple(map(int, shape))
        for key in _KEYS[kind]:
            if kind == "bn":
                dims_key = () if key == "num_batches_tracked" else dims
            elif kind == "fc" and key == "bias":
                dims_key = dims[:1]
            else:
                dims_key = dims
            state.append((f"{module}.{key}", dims_key))
    return state


@pytest.mark.parametrize("name, layout", [("resnet18", TORCHVISION_RESNET18),
                                          ("resnet50", TORCHVISION_RESNET50)])
def test_state_dict_matches_torchvision(name, layout):
    state = [(k, tuple(v.shape)) for k, v in _meta(name).state_dict().items()]
    assert state == _expected_state(layout)


# -- options -------------------------------------------------------------------------------

def test_variant_v1_moves_the_stride_to_the_first_1x1():
    v15, v1 = _meta("resnet50"), _meta("resnet50", variant="v1")
    assert (v15.layer2[0].conv1.stride, v15.layer2[0].conv2.stride) == ((1, 1), (2, 2))
    assert (v1.layer2[0].conv1.stride, v1.layer2[0].conv2.stride) == ((2, 2), (1, 1))
    assert count_parameters(v1) == count_parameters(v15)


def test_resnet_d_has_deep_stem_and_average_pool_downsampling():
    model = _meta("resnet50d")
    keys = set(model.state_dict())
    assert {"conv1.0.weight", "conv1.1.weight", "conv1.3.weight", "conv1.4.weight",
            "conv1.6.weight", "bn1.weight"} <= keys
    down = model.layer2[0].downsample
    assert isinstance(down[0], nn.AvgPool2d) and down[1].stride == (1, 1)
    assert "layer2.0.downsample.1.weight" in keys and "layer2.0.downsample.2.weight" in keys
    plain_stem = _meta("resnet50", deep_stem=True)  # ResNet-C alone: 1x1 strided projections
    assert plain_stem.layer2[0].downsample[0].stride == (2, 2)


@pytest.mark.parametrize("shortcut, projections", [("A", 0), ("B", 2), ("C", 9)])
def test_shortcut_options_place_projections(shortcut, projections):
    model = _meta("resnet20", shortcut=shortcut)
    convs = [b for b in model.blocks()
             if any(isinstance(m, nn.Conv2d) for m in b.downsample.modules())]
    assert len(convs) == projections


def test_width_mult_scales_every_stage():
    model = _meta("resnet20", width_mult=2)
    assert [getattr(model, f"layer{i}")[0].conv1.out_channels for i in (1, 2, 3)] == [32, 64, 128]
    assert _meta("wrn28_10", width_mult=0.5).num_features == 320  # WRN-28-5
    assert _meta("resnet50", width_mult=0.5).num_features == 1024


def test_drop_path_is_linear_in_depth():
    blocks = _meta("resnet20", drop_path_rate=0.3).blocks()
    rates = [b.drop_path.p for b in blocks]
    assert rates == pytest.approx([0.3 * (i + 1) / 9 for i in range(9)])


def test_dropout_before_head_is_applied_in_training_only():
    model = resnetlab.create_model("resnet20", drop_rate=0.5)
    x = _input("resnet20")
    model.train()
    feats = model.forward_features(x)
    dropped = model.forward_head(feats, pre_logits=True)
    assert (dropped == 0).float().mean() > 0.2
    model.eval()
    assert (model.forward_head(feats, pre_logits=True) == feats.mean((2, 3))).all()


def test_grayscale_inputs_and_class_count():
    model = resnetlab.create_model("resnet20", in_chans=1, num_classes=3)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 3)
    assert model.default_input_size == (1, 32, 32)
    mlp = resnetlab.create_model("mlp_resnet", in_features=784, num_blocks=1, width=32,
                                 bottleneck_width=16)
    assert mlp(torch.randn(2, 1, 28, 28)).shape == (2, 10)  # images are flattened


# -- the model interface -------------------------------------------------------------------

@pytest.mark.parametrize("name, stages, blocks, features, spatial", [
    ("resnet20", 3, 9, 64, 8), ("resnet50", 4, 16, 2048, 2), ("preact_resnet18", 4, 8, 512, 2),
    ("wrn16_8", 3, 6, 512, 8),
])
def test_model_interface(name, stages, blocks, features, spatial):
    model = resnetlab.create_model(name).eval()
    x = _input(name)
    feats = model.forward_features(x)
    assert feats.shape == (2, features, spatial, spatial) and model.num_features == features
    assert model.forward_head(feats, pre_logits=True).shape == (2, features)
    assert len(model.blocks()) == blocks
    layers = [f"layer{i}" for i in range(1, stages + 1)]
    assert [n for n, _ in model.named_stages()] == ["stem", *layers, "fc"]
    model.reset_classifier(5)
    assert model(x).shape == (2, 5) and model.num_classes == 5
    model.reset_classifier(0)
    assert model(x).shape == (2, features)


def test_stages_run_in_order_and_reproduce_forward():
    model = resnetlab.create_model("resnet18").eval()
    x = _input("resnet18")
    y = x
    for name, stage in model.named_stages():
        y = model.forward_head(y) if name == "fc" else stage(y)
    torch.testing.assert_close(y, model(x))


def test_mlp_interface_and_wrong_width_input():
    model = resnetlab.create_model("mlp_resnet", in_features=20, num_blocks=2, width=32,
                                   bottleneck_width=8).eval()
    assert isinstance(model, MLPResNet) and len(model.blocks()) == 2
    assert model.forward_features(torch.randn(3, 20)).shape == (3, 32)
    with pytest.raises(ConfigError, match="in_features=20"):
        model(torch.randn(3, 21))


# -- fast paths: channels_last and bf16 autocast ---------------------------------------------

@pytest.mark.parametrize("name", ["resnet20", "preact_resnet20", "resnet18d", "wrn16_8"])
def test_channels_last_and_bf16_autocast(name):
    model = resnetlab.create_model(name).eval()
    x = _input(name)
    with torch.no_grad():
        ref = model(x)
        cl_model = model.to(memory_format=torch.channels_last)
        out = cl_model(x.to(memory_format=torch.channels_last))
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
        feats = cl_model.forward_features(x.to(memory_format=torch.channels_last))
        assert feats.is_contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    # bf16 keeps 8 bits of mantissa; measured relative error of the logits is about 1%.
    assert (low.float() - ref).norm() / ref.norm() < 0.05


# -- bad input: one clear ConfigError naming the argument ---------------------------------

@pytest.mark.parametrize("name, kwargs, argument", [
    ("resnet20", {"shortcut": "D"}, "shortcut"),
    ("resnet20", {"drop_rate": 1.0}, "drop_rate"),
    ("resnet50", {"drop_path_rate": -0.1}, "drop_path_rate"),
    ("wrn16_8", {"block_drop_rate": 1.5}, "block_drop_rate"),
    ("resnet20", {"width_mult": -1}, "width_mult"),
    ("resnet20", {"in_chans": 0}, "in_chans"),
    ("resnet20", {"num_classes": -1}, "num_classes"),
    ("resnet50", {"variant": "v2"}, "variant"),
    ("resnet50d", {"shortcut": "A"}, "avg_down"),
    ("plain20", {"drop_path_rate": 0.1}, "drop_path_rate"),
    ("plain20", {"zero_init_last": True}, "zero_init_last"),
    ("resnet20", {"depht": 3}, "depht"),
    ("mlp_resnet", {"num_blocks": 0}, "num_blocks"),
    ("mlp_resnet", {"width": -8}, "width"),
    ("mlp_resnet", {"drop_rate": 1}, "drop_rate"),
    ("resnet18", {"global_pool": "median"}, "global_pool"),
])
def test_impossible_options_raise_config_error(name, kwargs, argument):
    with pytest.raises(ConfigError, match=argument) as err:
        _meta(name, **kwargs)
    assert isinstance(err.value, ValueError) and "\n" not in str(err.value)


def test_structural_errors_name_the_argument():
    from resnetlab.models import BasicBlock, cifar_resnet

    with pytest.raises(ConfigError, match=r"layers\[1\]=0"):
        ResNet(BasicBlock, [2, 0, 2], [16, 32, 64])
    with pytest.raises(ConfigError, match=r"widths\[1\]=-32"):
        ResNet(BasicBlock, [2, 2, 2], [16, -32, 64])
    with pytest.raises(ConfigError, match="depth=21"):
        cifar_resnet(21, BasicBlock)
    # Option A can only add channels: a bottleneck whose expansion shrinks them needs B/C.
    with pytest.raises(ConfigError, match="shortcut='A' cannot shrink channels from 256 to 128"):
        Bottleneck(256, 32, shortcut="A")
    with pytest.raises(ConfigError, match="shortcut='A'"):
        ResNet(Bottleneck, [1, 1], [64, 16], shortcut="A")


# -- weight files users already have --------------------------------------------------------

def test_load_weights_from_safetensors_and_wrapped_pth(tmp_path):
    from safetensors.torch import save_file

    from resnetlab.transfer import load_weights

    torch.manual_seed(1)
    source = resnetlab.create_model("resnet18", num_classes=7)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, tmp_path / "r18.safetensors")
    # A DDP checkpoint: {"state_dict": {"module.conv1.weight": ...}}
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "r18.pth")
    x = _input("resnet18")
    for file in ("r18.safetensors", "r18.pth"):
        target = resnetlab.create_model("resnet18", num_classes=7)
        assert load_weights(target, tmp_path / file) == []
        torch.testing.assert_close(target.eval()(x), source.eval()(x))


def test_load_weights_head_mismatch_and_drop_head(tmp_path):
    from resnetlab.transfer import load_weights
    from resnetlab.utils.errors import DataError

    torch.save(resnetlab.create_model("resnet20").state_dict(), tmp_path / "r20.pt")
    target = resnetlab.create_model("resnet20", num_classes=3)
    with pytest.raises(DataError, match=r"fc.weight has shape \(10, 64\).*drop_head=True"):
        load_weights(target, tmp_path / "r20.pt")
    fc_before = target.fc.weight.clone()
    assert load_weights(target, tmp_path / "r20.pt", drop_head=True) == ["fc.bias", "fc.weight"]
    assert torch.equal(target.fc.weight, fc_before)
    with pytest.raises(DataError, match="missing"):
        load_weights(resnetlab.create_model("resnet32"), tmp_path / "r20.pt")


class _Payload:  # stands for any pickled object that is not a tensor
    pass


def test_load_weights_refuses_pickled_objects_and_unknown_formats(tmp_path):
    from resnetlab.transfer import load_weights
    from resnetlab.utils.errors import DataError

    torch.save({"conv1.weight": torch.zeros(1), "evil": _Payload()}, tmp_path / "bad.pth")
    model = resnetlab.create_model("resnet20")
    with pytest.raises(DataError, match="refusing to unpickle"):
        load_weights(model, tmp_path / "bad.pth")
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(DataError, match="unknown weights format"):
        load_weights(model, tmp_path / "w.npz")
    with pytest.raises(DataError, match="no such weights file"):
        load_weights(model, tmp_path / "absent.safetensors")
