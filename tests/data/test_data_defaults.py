"""Defaults follow the data (issue #8): split sizes, augmentation, and the folder/CSV traps
(symlinked class folders, one class, decompression bombs, undecodable folder names)."""

from __future__ import annotations

import json
import logging
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from helpers import build
from resnetlab.data.splits import default_val_size, resolve_val_size
from resnetlab.utils.errors import ConfigError, DataError


def _tiny_folder(root, counts, size=(4, 4)):
    for k, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.new("L", size, (k * 60 + i) % 256).save(root / name / f"{i:05d}.png")
    return root


def _csv(path, n, classes=("yes", "no")):
    lines = ["age,income,label"] + [f"{20 + i},{1000 + 7 * i},{classes[i % len(classes)]}"
                                    for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_5200_image_folder_trains_on_4680_and_validates_on_520(tmp_path):
    root = _tiny_folder(tmp_path / "f", {"a": 2600, "b": 2600}, size=(2, 2))
    bundle = build(f"folder:{root}", num_workers=0, augment="flip")  # the default recipe's
    split = bundle.meta["split"]
    assert (split["train"], split["val"], split["test"]) == (4680, 520, None)
    assert bundle.train.num_samples == 4680 and bundle.val.num_samples == 520
    assert split["val_source"].startswith("default 0.1")


def test_val_size_is_a_fraction_or_a_count(tmp_path):
    path = _csv(tmp_path / "t.csv", 200)
    frac = build(f"csv:{path}", target="label", val_size=0.25)
    assert frac.meta["split"]["val"] == 50 and frac.meta["split"]["val_source"].startswith(
        "fraction 0.25")
    count = build(f"csv:{path}", target="label", val_size=30)
    assert (count.meta["split"]["train"], count.meta["split"]["val"]) == (170, 30)
    with pytest.raises(ConfigError, match=r"--val-size 1\.5"):
        resolve_val_size(1.5, np.zeros(10))
    with pytest.raises(ConfigError, match=r"--val-size 300: must be between 0 and 199"):
        build(f"csv:{path}", target="label", val_size=300)


def test_default_val_size_is_ten_percent_capped_with_one_per_class():
    assert default_val_size(5200) == 520 and default_val_size(200_000) == 5000
    assert default_val_size(30, num_classes=5) == 5  # 10% would leave classes unseen
    assert default_val_size(6, num_classes=5) == 1  # too small for one per class each side
    assert default_val_size(2) == 1


def test_a_small_csv_builds_with_the_default_recipe(tmp_path):
    """`resnetlab train --model mlp_resnet --data csv:table.csv --target label` (README)."""
    path = _csv(tmp_path / "table.csv", 12)
    bundle = build(f"csv:{path}", target="label", augment="flip")  # recipe's flip: dropped
    assert bundle.meta["split"]["train"] + bundle.meta["split"]["val"] == 12
    assert bundle.val.num_samples == 2  # one per class, not 5000
    assert bundle.meta["augment"] == "none"
    x, _ = next(iter(bundle.train))
    assert x.shape[1] == 2


def test_readme_folder_example(tmp_path):
    """`--data folder:~/photos --image-size 64 --in-chans 3 --on-bad-image skip` (README)."""
    root = _tiny_folder(tmp_path / "photos", {"cats": 8, "dogs": 8}, size=(20, 16))
    (root / "dogs" / "broken.jpg").write_text("not a jpeg")
    bundle = build(f"folder:{root}", image_size=64, in_chans=3, on_bad_image="skip")
    assert bundle.input_shape == (3, 64, 64) and bundle.meta["skipped"] == 1
    assert bundle.meta["split"]["val"] == 2 and bundle.meta["augment"] == "none"


def test_a_class_folder_linking_to_the_root_is_skipped_with_a_warning(tmp_path, caplog):
    root = _tiny_folder(tmp_path / "f", {"a": 3, "b": 3})
    os.symlink(root, root / "loop")  # would relabel all 6 images as "loop"
    os.symlink(root / "a", root / "b" / "again")  # a cycle-free link into another class
    with caplog.at_level(logging.WARNING):
        bundle = build(f"folder:{root}", val_size=2)
    assert bundle.classes == ["a", "b"]
    assert bundle.meta["split"]["train"] + bundle.meta["split"]["val"] == 6
    assert "loop: skipped" in caplog.text and "again: skipped" in caplog.text


def test_a_link_cycle_inside_a_class_is_not_followed(tmp_path, caplog):
    root = _tiny_folder(tmp_path / "f", {"a": 2, "b": 2})
    os.symlink(root / "a", root / "a" / "self")
    with caplog.at_level(logging.WARNING):
        bundle = build(f"folder:{root}", val_size=1)
    assert bundle.meta["split"]["train"] + bundle.meta["split"]["val"] == 4
    assert "self: skipped" in caplog.text


def test_single_class_folder_and_csv_is_an_error_unless_allowed(tmp_path, caplog):
    root = _tiny_folder(tmp_path / "f", {"only": 5})
    path = _csv(tmp_path / "t.csv", 10, classes=("yes",))
    with pytest.raises(DataError, match=r"folder:.*single class \('only'\).*--allow-single-class"):
        build(f"folder:{root}", val_size=1)
    with pytest.raises(DataError, match=r"csv:.*--target label.*single class \('yes'\)"):
        build(f"csv:{path}", target="label")
    with caplog.at_level(logging.WARNING):
        build(f"folder:{root}", val_size=1, allow_single_class=True)
        build(f"csv:{path}", target="label", allow_single_class=True)
    assert caplog.text.count("single class") == 2 and "trivially 100%" in caplog.text


def _bomb_png(path, side=20_000):
    """A PNG whose header claims side x side pixels (Pillow refuses > 2 x 89.5M at open)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def test_a_decompression_bomb_is_a_bad_image(tmp_path):
    root = _tiny_folder(tmp_path / "f", {"a": 4, "b": 4})
    _bomb_png(root / "a" / "bomb.png")
    with pytest.raises(DataError, match=r"a/bomb\.png: image too large .*--on-bad-image skip"):
        build(f"folder:{root}", val_size=2)
    bundle = build(f"folder:{root}", val_size=2, on_bad_image="skip")
    assert bundle.meta["skipped"] == 1 and "bomb.png" in bundle.skipped[0]
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's limit is kept


def test_a_non_utf8_class_folder_name_is_printable(tmp_path):
    root = _tiny_folder(tmp_path / "f", {"plain": 3})
    odd = os.path.join(os.fsencode(root), b"caf\xe9")  # Latin-1 bytes, not UTF-8
    os.mkdir(odd)
    for i in range(3):
        Image.new("L", (4, 4), 9 * i).save(os.fsdecode(os.path.join(odd, f"{i}.png".encode())))
    bundle = build(f"folder:{root}", val_size=2)
    assert bundle.classes == ["caf\ufffd", "plain"]
    json.dumps(bundle.meta, ensure_ascii=False).encode("utf-8")  # no lone surrogates left
