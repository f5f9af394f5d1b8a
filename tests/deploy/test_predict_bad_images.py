"""Issue 22, "not yet tried": ``predict`` on a folder that holds bad images (truncated, not an
image at all, empty, a directory named like an image).  By default the first bad file is one line
naming it; ``--on-bad-image skip`` predicts the good ones and names and counts the skipped."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import resnetlab
from helpers import build, cli, one_line_error
from resnetlab.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir()
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(root / c / f"{i}.png")
    bundle = build(f"folder:{root}", batch_size=4, download=False, num_workers=0)
    torch.manual_seed(0)
    model = resnetlab.create_model("resnet20", width_mult=0.25, num_classes=2, in_chans=1).eval()
    path = tmp_path_factory.mktemp("ckpt") / "best"
    save_checkpoint(path, model_state=model.state_dict(),
                    meta={"model": model.build_args, "data": bundle.meta, "classes": bundle.classes})
    return path


@pytest.fixture
def messy(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "new"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(folder / f"good{i}.png")
    good = (folder / "good0.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "notes.png").write_text("this is not an image\n")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "dir.png").mkdir()  # a folder named like an image: searched, holds nothing
    return folder


def test_bad_image_stops_with_one_line_naming_it(run_dir, messy, capsys):
    code, out, err = cli(capsys, "predict", run_dir, messy, "--runtime", "torch", "--device", "cpu")
    line = one_line_error(err)
    assert code == 2 and str(messy) in line
    assert any(name in line for name in ("truncated.png", "notes.png", "empty.jpg"))
    assert "--on-bad-image skip" in line


def test_skip_predicts_the_good_and_names_the_bad(run_dir, messy, capsys):
    code, out, err = cli(capsys, "predict", run_dir, messy, "--runtime", "torch", "--device",
                         "cpu", "--on-bad-image", "skip")
    assert code == 0, err
    assert all(f"good{i}.png" in out for i in range(3))
    assert not any(bad in out for bad in ("truncated.png", "notes.png", "empty.jpg"))
    assert "skipped 3 unreadable image(s)" in err
    assert all(bad in err for bad in ("truncated.png", "notes.png", "empty.jpg"))


def test_only_bad_images_are_all_skipped_and_named(run_dir, tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "x.png").write_text("nope")
    code, out, err = cli(capsys, "predict", run_dir, folder, "--runtime", "torch", "--device",
                         "cpu", "--on-bad-image", "skip")
    assert code == 0 and "x.png" not in out
    assert f"skipped 1 unreadable image(s): {folder / 'x.png'}" in err and "0 inputs" in err
