"""Fixtures of the serving tests: one tiny Fashion-MNIST run (the guide's `resnetlab train`
command, shrunk) and held-in test images as PNG files."""

from __future__ import annotations

import gzip
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from serve_helpers import IMAGES, SHRINK, env, guide_command, shell

from helpers import FMNIST


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="session")
def fmnist_run(workdir) -> Path:
    """runs/fmnist-resnet20 as the guide's train command writes it (shrunk)."""
    if not (FMNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST not installed (Debian package dataset-fashion-mnist)")
    command = shell(guide_command("resnetlab train")) + " " + shlex.join(SHRINK)
    done = subprocess.run(command, shell=True, cwd=workdir, env=env(), capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    run = workdir / "runs" / "fmnist-resnet20"
    assert (run / "results.json").is_file(), done.stderr[-3000:]
    return run


@pytest.fixture(scope="session")
def test_images(workdir) -> tuple[list[Path], list[int]]:
    """The first IMAGES Fashion-MNIST test images as PNG files, and their labels."""
    if not (FMNIST / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST not installed")
    pixels = np.frombuffer(gzip.open(FMNIST / "t10k-images-idx3-ubyte.gz").read(), np.uint8,
                           IMAGES * 784, 16).reshape(IMAGES, 28, 28)
    labels = np.frombuffer(gzip.open(FMNIST / "t10k-labels-idx1-ubyte.gz").read(), np.uint8,
                           IMAGES, 8)
    folder = workdir / "images"
    folder.mkdir(exist_ok=True)
    files = []
    for i, img in enumerate(pixels):
        files.append(folder / f"{i:03d}.png")
        Image.fromarray(img).save(files[-1])
    return files, [int(y) for y in labels]


