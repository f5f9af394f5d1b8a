"""Batched augmentation: shapes, determinism, flip involution, crops in bounds, erasing, specs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from resnetlab.data.augment import (
    AugmentSpec,
    ImageTransform,
    Normalize,
    channel_stats,
    cutout,
    flip_tta,
    hflip,
    parse_augment,
    random_crop,
    random_crop_flip,
    random_erase,
    random_flip,
)
from resnetlab.utils.errors import ConfigError
from resnetlab.utils.seed import seeded_generator


def batch(n=16, c=3, h=9, w=7, seed=0):
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def test_hflip_is_an_involution_and_mirrors():
    x = batch()
    assert torch.equal(hflip(hflip(x)), x)
    assert torch.equal(hflip(x)[..., 0], x[..., -1])


@settings(max_examples=25, deadline=None)
@given(pad=st.integers(0, 5), h=st.integers(1, 9), w=st.integers(1, 9), seed=st.integers(0, 99))
def test_crop_stays_in_bounds(pad, h, w, seed):
    """Every cropped sample equals some h x w window of the zero-padded sample."""
    x = batch(n=4, c=2, h=h, w=w, seed=seed)
    out = random_crop(x, pad, seeded_generator(seed))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = F.pad(x, (pad,) * 4)
    for i in range(len(x)):
        windows = [padded[i, :, dy:dy + h, dx:dx + w]
                   for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]
        assert any(torch.equal(out[i], win) for win in windows)


def test_random_flip_flips_about_half_and_nothing_else():
    x = batch(n=200)
    out = random_flip(x, seeded_generator(1))
    same = [torch.equal(out[i], x[i]) for i in range(len(x))]
    mirrored = [torch.equal(out[i], hflip(x[i])) for i in range(len(x))]
    assert all(s or m for s, m in zip(same, mirrored, strict=True))
    assert 70 < sum(mirrored) < 130


def test_crop_flip_is_crop_then_flip():
    """The fused gather reads the same pixels as cropping and then mirroring the crop."""
    x = batch(n=32)
    fused = random_crop_flip(x, 2, True, seeded_generator(5))
    crop_only = random_crop(x, 2, seeded_generator(5))
    for i in range(len(x)):
        assert torch.equal(fused[i], crop_only[i]) or torch.equal(fused[i], hflip(crop_only[i]))


def test_same_seed_same_output_other_seed_differs():
    x = batch()
    spec = parse_augment("crop:2,flip,erase:0.5,cutout:3")
    tf = ImageTransform(spec, [0.5] * 3, [0.25] * 3)
    a, b = tf(x, seeded_generator(0, 1, 2)), tf(x, seeded_generator(0, 1, 2))
    assert torch.equal(a, b)
    assert not torch.equal(a, tf(x, seeded_generator(0, 1, 3)))
    assert a.shape == x.shape and a.dtype == torch.float32
    assert a.is_contiguous(memory_format=torch.channels_last)


def test_no_generator_means_no_augmentation():
    x = batch()
    tf = ImageTransform(parse_augment("crop:4,flip,erase:1"), [0.5] * 3, [0.25] * 3)
    assert torch.equal(tf(x), Normalize([0.5] * 3, [0.25] * 3)(x))


def test_normalize_matches_definition():
    x = batch()
    mean, std = [0.1, 0.5, 0.9], [0.2, 0.3, 0.4]
    want = (x.double() / 255 - torch.tensor(mean).view(1, 3, 1, 1).double()) \
        / torch.tensor(std).view(1, 3, 1, 1).double()
    torch.testing.assert_close(Normalize(mean, std)(x).double(), want, atol=1e-5, rtol=1e-5)


def test_random_erase_boxes():
    x = torch.ones(64, 2, 20, 16)
    out = random_erase(x, 1.0, seeded_generator(3))
    zeros = (out == 0).all(dim=1)  # erased in every channel at once
    assert torch.equal(out == 0, zeros[:, None].expand_as(out))
    area = zeros.flatten(1).sum(1).float() / (20 * 16)
    assert (area > 0).all() and (area <= 0.45).all()  # 0.02..0.4 plus rounding
    rows, cols = zeros.any(2), zeros.any(1)  # a box: erased cells = rows x cols
    assert torch.equal(zeros.flatten(1).sum(1), rows.sum(1) * cols.sum(1))
    assert torch.equal(random_erase(x, 0.0, seeded_generator(3)), x)


def test_cutout_square_clipped_at_border():
    x = torch.ones(100, 1, 10, 10)
    out = cutout(x, 4, seeded_generator(0))
    erased = (out == 0).flatten(1).sum(1)
    assert erased.max() == 16 and erased.min() >= 4  # a corner keeps a 2x2 quarter at least


@pytest.mark.parametrize("text,want", [
    ("default", AugmentSpec(crop=4, flip=True)),
    ("none", AugmentSpec()),
    ("crop:2, flip ,erase:0.25", AugmentSpec(crop=2, flip=True, erase=0.25)),
    ("cutout:8", AugmentSpec(cutout=8)),
    ("translate:3", AugmentSpec(crop=3)),
])
def test_parse_augment(text, want):
    spec = parse_augment(text, default="crop:4,flip")
    assert spec == want
    assert parse_augment(str(spec)) == spec  # canonical form round-trips


@pytest.mark.parametrize("text", ["rotate", "crop:x", "erase:2", "cutout:0", "flip:1"])
def test_parse_augment_errors_name_the_flag(text):
    with pytest.raises(ConfigError, match=r"--augment"):
        parse_augment(text)


def test_flip_tta_views():
    x = batch().float()
    views = list(flip_tta(x))
    assert len(views) == 2 and torch.equal(views[0], x) and torch.equal(views[1], hflip(x))
    assert len(list(flip_tta(torch.zeros(4, 3)))) == 1  # tables: identity only


def test_channel_stats_exact():
    x = batch(n=50)
    mean, std = channel_stats(x)
    xf = x.double() / 255
    torch.testing.assert_close(torch.tensor(mean, dtype=torch.float64), xf.mean((0, 2, 3)))
    torch.testing.assert_close(torch.tensor(std, dtype=torch.float64),
                               xf.transpose(0, 1).reshape(3, -1).std(1, unbiased=False))
    assert channel_stats(torch.zeros(2, 1, 3, 3, dtype=torch.uint8))[1] == [1.0]
