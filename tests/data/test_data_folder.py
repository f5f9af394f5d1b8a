"""Image folders: every Pillow mode, bad files, class checks, cache, streaming, prediction inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import build
from resnetlab.data import folders, preprocess_inputs
from resnetlab.data.folders import scan_folder
from resnetlab.data.readers.image import decode_image
from resnetlab.utils.errors import ConfigError, DataError


def _palette_image(size, index, transparent=False):
    img = Image.new("P", size, index)
    img.putpalette([0, 0, 0, 200, 40, 10, 10, 200, 40, 90, 90, 90])
    return img, ({"transparency": 3} if transparent else {})


def _images(size, shade):
    """(file name, image, save options) in every mode the reader must accept."""
    w, h = size
    grad = np.add.outer(np.arange(h), np.arange(w)).astype(np.uint8) * 9 + shade
    return [
        ("l.png", Image.fromarray(grad, "L"), {}),
        ("la.png", Image.merge("LA", [Image.fromarray(grad), Image.new("L", size, 255)]), {}),
        ("p.png", *_palette_image(size, 1)),
        ("pt.png", *_palette_image(size, 3, transparent=True)),
        ("rgb.jpg", Image.merge("RGB", [Image.fromarray(grad)] * 3), {"quality": 95}),
        ("rgba.png", Image.new("RGBA", size, (shade, 20, 30, 255)), {}),
        ("cmyk.jpg", Image.new("CMYK", size, (0, 255, 0, 0)), {}),
        ("i16.png", Image.fromarray(grad.astype(np.uint16) * 257), {}),
        ("one.bmp", Image.new("1", size, 1), {}),
        ("rgb.webp", Image.new("RGB", size, (shade, 100, 200)), {"lossless": True}),
        ("big.png", Image.new("RGB", (w * 3, h * 2), (shade, shade, shade)), {}),
    ]


def make_folder(root, classes=("cat", "dog"), size=(10, 12), bad=False):
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for filename, img, opts in _images(size, shade=40 * k):
            img.save(root / name / filename, **opts)
    (root / classes[0] / "notes.txt").write_text("not an image, ignored by extension")
    if bad:
        good = (root / classes[1] / "l.png").read_bytes()
        (root / classes[1] / "trunc.png").write_bytes(good[: len(good) // 2])
        (root / classes[1] / "text.png").write_text("hello, I am not a PNG")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("imgs") / "train")


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("bad") / "train", bad=True)


def test_every_mode_decodes_to_both_channel_counts(folder):
    for path in sorted((folder / "cat").iterdir()):
        if path.suffix == ".txt":
            continue
        for chans in (1, 3):
            arr = decode_image(path, chans, (8, 6))
            assert arr.shape == (chans, 8, 6) and arr.dtype == np.uint8, path.name


def test_mode_conversions_keep_values(folder):
    cat = folder / "cat"
    assert decode_image(cat / "i16.png", 1, (12, 10))[0, 1, 1] == 18  # 16-bit: 18*257 -> 18
    assert tuple(decode_image(cat / "cmyk.jpg", 3, (12, 10))[:, 0, 0]) == (255, 0, 255)
    assert tuple(decode_image(cat / "p.png", 3, (12, 10))[:, 3, 3]) == (200, 40, 10)
    assert decode_image(cat / "pt.png", 3, (12, 10)).max() == 0  # transparent -> black
    assert tuple(decode_image(cat / "rgba.png", 3, (12, 10))[:, 0, 0]) == (0, 20, 30)
    assert decode_image(cat / "one.bmp", 1, (12, 10)).min() == 255
    grey = decode_image(cat / "l.png", 1, (12, 10))[0]
    np.testing.assert_array_equal(grey, decode_image(cat / "la.png", 1, (12, 10))[0])
    np.testing.assert_array_equal(decode_image(cat / "l.png", 3, (12, 10)), np.stack([grey] * 3))


def test_resize_covers_then_centre_crops(folder):
    arr = decode_image(folder / "dog" / "big.png", 3, (12, 10))  # 30x24 -> 15x12 -> crop 10x12
    assert arr.shape == (3, 12, 10) and (arr == 40).all()


def test_scan_sorted_classes_and_ignores_other_files(folder):
    index = scan_folder(folder)
    assert index.classes == ["cat", "dog"]
    assert len(index) == 22 and index.labels.tolist() == [0] * 11 + [1] * 11
    assert all(p.suffix != ".txt" for p in index.files)


def test_bad_files_error_names_the_path(bad_folder):
    with pytest.raises(DataError, match=r"dog/(text|trunc)\.png: cannot read image .*--on-bad-image skip"):
        build(f"folder:{bad_folder}")


def test_bad_files_skipped_counted_and_reported(bad_folder):
    bundle = build(f"folder:{bad_folder}", on_bad_image="skip", val_size=4, seed=1)
    assert bundle.meta["skipped"] == 2 and len(bundle.skipped) == 2
    assert any("trunc.png" in s for s in bundle.skipped)
    assert any("text.png" in s for s in bundle.skipped)
    assert bundle.train.num_samples + bundle.val.num_samples == 22
    assert bundle.meta["input_shape"] == [3, 12, 10]  # colour present; most common size


def test_empty_class_and_mismatched_validation_classes(tmp_path, folder):
    (tmp_path / "t" / "a").mkdir(parents=True)
    (tmp_path / "t" / "b").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "t" / "a" / "x.png")
    with pytest.raises(DataError, match=r"t/b: empty class folder"):
        scan_folder(tmp_path / "t")
    with pytest.raises(DataError, match=r"no class folders"):
        scan_folder(tmp_path / "t" / "a")
    val = make_folder(tmp_path / "val", classes=("cat", "cow"))
    with pytest.raises(DataError, match=r"val: classes differ .*missing \['dog'\], extra \['cow'\]"):
        build(f"folder:{folder}", val_dir=val)


def _batches(bundle, epoch=0):
    return [(x.clone(), y.clone()) for x, y in bundle.train.epoch(epoch)]


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x, u) and torch.equal(y, v)
                                    for (x, y), (u, v) in zip(a, b, strict=True))


def test_streaming_matches_in_memory(folder):
    kwargs = {"batch_size": 4, "val_size": 6, "seed": 3, "augment": "crop:2,flip,erase:0.5",
              "in_chans": 1, "image_size": 8}
    memory = build(f"folder:{folder}", in_memory=True, **kwargs)
    stream = build(f"folder:{folder}", in_memory=False, num_workers=2, **kwargs)
    assert stream.meta["streamed"] and not memory.meta["streamed"]
    assert memory.meta["mean"] == stream.meta["mean"]
    assert _same(_batches(memory, 1), _batches(stream, 1))
    assert _same(list(memory.val), list(stream.val))


def test_cache_is_written_then_reused_without_decoding(folder, tmp_path, monkeypatch):
    first = build(f"folder:{folder}", cache_dir=tmp_path, batch_size=4, seed=2)
    assert len(list(tmp_path.glob("train-*.npy"))) == 1
    monkeypatch.setattr(folders, "decode_image",
                        lambda *a: pytest.fail("decoded although the cache is valid"))
    again = build(f"folder:{folder}", cache_dir=tmp_path, batch_size=4, seed=2)
    assert _same(_batches(first), _batches(again))
    memmapped = build(f"folder:{folder}", cache_dir=tmp_path, batch_size=4, seed=2,
                           in_memory=False)  # too large for memory: reads the cache file
    assert memmapped.meta["streamed"] and _same(_batches(first), _batches(memmapped))


def test_cache_remembers_bad_files(bad_folder, tmp_path):
    build(f"folder:{bad_folder}", cache_dir=tmp_path, on_bad_image="skip")
    with pytest.raises(DataError, match=r"trunc\.png|text\.png"):
        build(f"folder:{bad_folder}", cache_dir=tmp_path)


def test_train_val_test_layout_and_prediction_inputs(tmp_path):
    root = tmp_path / "ds"
    for split in ("train", "val", "test"):
        make_folder(root / split)
    bundle = build(f"folder:{root}", in_chans=1, image_size=(9, 7), eval_batch_size=5)
    assert bundle.train.num_samples == 22 and bundle.val.num_samples == 22
    assert bundle.test is not None and bundle.test.num_samples == 22
    x, labels = preprocess_inputs([root / "val"], bundle.meta)
    val = torch.cat([xb for xb, _ in bundle.val])
    assert torch.equal(x, val.contiguous()) and labels[0].endswith("cat/big.png")
    one, _ = preprocess_inputs([root / "val" / "dog" / "p.png"], bundle.meta)
    assert one.shape == (1, 1, 9, 7)
    with pytest.raises(DataError, match=r"nope\.png: no such file"):
        preprocess_inputs([root / "nope.png"], bundle.meta)
    (tmp_path / "bad.png").write_text("x")
    with pytest.raises(DataError, match=r"bad\.png: cannot read image"):
        preprocess_inputs([tmp_path / "bad.png"], bundle.meta)


def test_option_errors(folder):
    with pytest.raises(ConfigError, match="--on-bad-image 'ignore'"):
        build(f"folder:{folder}", on_bad_image="ignore")
    with pytest.raises(ConfigError, match="--in-chans 2"):
        build(f"folder:{folder}", in_chans=2)
    with pytest.raises(ConfigError, match="--train-size 500"):
        build(f"folder:{folder}", train_size=500)
