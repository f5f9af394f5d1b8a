"""Item 11 of issue 22: grey images stored as palette PNGs (mode ``P``) are grey: a folder of
them trains a 1-channel network, and predict does not call them colour."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from resnetlab.data.readers.image import probe_images
from resnetlab.deploy.predictor import image_channels


def _grey(seed=0):
    return np.random.default_rng(seed).integers(0, 255, (28, 28), dtype=np.uint8)


def _palette_pngs(tmp_path, how):
    files = []
    for i in range(4):
        grey = _grey(i)
        if how == "web":  # an editor's default: a grey picture on the 216-colour web palette
            img = Image.fromarray(np.stack([grey] * 3, -1), "RGB").convert(
                "P", palette=Image.Palette.WEB, dither=Image.Dither.NONE)
        elif how == "adaptive":
            img = Image.fromarray(np.stack([grey] * 3, -1), "RGB").quantize(16)
        else:
            img = Image.fromarray(grey, "L").convert("P")
        files.append(tmp_path / f"{how}{i}.png")
        img.save(files[-1])
        assert Image.open(files[-1]).mode == "P"
    return files


@pytest.mark.parametrize("how", ["from-L", "web", "adaptive"])
def test_grey_palette_is_one_channel(tmp_path, how):
    files = _palette_pngs(tmp_path, how)
    assert probe_images(files)[0] == 1
    assert all(image_channels(f) == 1 for f in files)


def test_colour_palette_is_three_channels(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (28, 28, 3), dtype=np.uint8)
    Image.fromarray(rgb, "RGB").quantize(64).save(tmp_path / "c.png")
    assert probe_images([tmp_path / "c.png"])[0] == 3 and image_channels(tmp_path / "c.png") == 3
