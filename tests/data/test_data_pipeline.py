"""Named data sets, their resolution order, splits and the seeded batch pipeline."""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import tarfile
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import build
from resnetlab.data import datasets, preprocess_inputs
from resnetlab.data.datasets import DATASETS, load_named, locate
from resnetlab.data.splits import stratified_take
from resnetlab.utils.errors import ConfigError, DataError

DEBIAN = Path(datasets.DEBIAN_FASHION_MNIST)


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """Tests never touch the network, the user's cache or $RESNETLAB_DATA."""
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to use the network")
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setenv("RESNETLAB_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("RESNETLAB_DATA", raising=False)


def write_idx_set(folder, n_train=300, n_test=50, size=28, seed=0):
    """A small MNIST-format data set (gzipped IDX files) with balanced labels."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        for kind, arr, magic in (("images-idx3", x, 3), ("labels-idx1", y, 1)):
            header = bytes([0, 0, 8, magic]) + struct.pack(f">{arr.ndim}I", *arr.shape)
            with gzip.open(folder / f"{prefix}-{kind}-ubyte.gz", "wb") as fh:
                fh.write(header + arr.tobytes())
    return folder


@pytest.fixture
def mnist_dir(tmp_path):
    return write_idx_set(tmp_path / "data" / "mnist").parent


def mnist(data_dir, **kw):
    kw = {"val_size": 50, "batch_size": 32, "eval_batch_size": 40, "download": False, **kw}
    return build("mnist", data_dir=data_dir, **kw)


def collect(batches):
    return [(x.clone(), y.clone()) for x, y in batches]


def same(a, b):
    return len(a) == len(b) and all(torch.equal(x, u) and torch.equal(y, v)
                                    for (x, y), (u, v) in zip(a, b, strict=True))


def test_named_bundle_shapes_and_meta(mnist_dir):
    bundle = mnist(mnist_dir)
    assert bundle.classes == list("0123456789") and bundle.num_classes == 10
    assert bundle.input_shape == (1, 28, 28) and bundle.meta["augment"] == "crop:2"
    assert (bundle.train.num_samples, bundle.val.num_samples, bundle.test.num_samples) == (250, 50, 50)
    assert len(bundle.train) == 7  # 250 // 32, last partial batch dropped
    assert len(bundle.val) == 2 and len(bundle.test) == 2  # 40 + 10: kept
    x, y = next(iter(bundle.train))
    assert x.shape == (32, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert [len(y) for _, y in bundle.val] == [40, 10]


def test_same_seed_same_batches_and_resume_skips_exactly(mnist_dir):
    a, b = mnist(mnist_dir, seed=7), mnist(mnist_dir, seed=7)
    epoch2 = collect(a.train.epoch(2))
    assert same(epoch2, collect(b.train.epoch(2)))
    assert same(epoch2[3:], collect(b.train.epoch(2, start=3)))  # resume mid-epoch
    assert same(collect(a.train.epoch(0)), collect(iter(a.train)))
    assert not torch.equal(epoch2[0][1], collect(a.train.epoch(3))[0][1])  # reshuffled
    assert not same(epoch2, collect(mnist(mnist_dir, seed=8).train.epoch(2)))
    assert list(a.train.epoch(2, start=len(a.train))) == []
    with pytest.raises(ConfigError, match="start batch 99"):
        next(a.train.epoch(0, start=99))


def test_every_training_sample_once_per_epoch(mnist_dir):
    bundle = mnist(mnist_dir, batch_size=25, augment="none")
    labels = torch.cat([y for _, y in bundle.train.epoch(4)])
    assert len(labels) == 250 and torch.bincount(labels).tolist() == [25] * 10


def test_eval_loaders_fixed_and_unaugmented(mnist_dir):
    bundle = mnist(mnist_dir, augment="crop:4,flip,erase:1")
    first, second = collect(bundle.val), collect(bundle.val.epoch(5))
    assert same(first, second)
    assert not any((x == 0).flatten(1).all(1).any() for x, _ in first)


def test_train_size_is_a_stratified_subset(mnist_dir):
    bundle = mnist(mnist_dir, train_size=20)
    assert bundle.train.num_samples == 20 and bundle.train.batch_size == 20
    labels = torch.cat([y for _, y in bundle.train])
    assert torch.bincount(labels, minlength=10).tolist() == [2] * 10
    with pytest.raises(ConfigError, match=r"--train-size 251: must be between 1 and 250"):
        mnist(mnist_dir, train_size=251)
    with pytest.raises(ConfigError, match=r"--val-size 300"):
        mnist(mnist_dir, val_size=300)


def test_stratified_take_proportions_and_determinism():
    labels = np.repeat(np.arange(3), [50, 30, 20])
    taken, rest = stratified_take(labels, 10, 0, "x")
    assert np.bincount(labels[taken]).tolist() == [5, 3, 2]
    assert len(np.union1d(taken, rest)) == 100 and not np.intersect1d(taken, rest).size
    assert np.array_equal(taken, stratified_take(labels, 10, 0, "x")[0])
    assert not np.array_equal(taken, stratified_take(labels, 10, 1, "x")[0])


def test_resolution_order_data_dir_then_env(tmp_path, monkeypatch):
    first = write_idx_set(tmp_path / "a" / "mnist")
    second = write_idx_set(tmp_path / "b" / "MNIST" / "raw")  # torchvision's layout
    monkeypatch.setenv("RESNETLAB_DATA", str(tmp_path / "b"))
    assert locate("mnist", tmp_path / "a") == first
    assert locate("mnist") == second


def test_not_found_error_lists_places_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNETLAB_DATA", str(tmp_path / "env"))
    with pytest.raises(DataError) as err:
        build("kmnist", data_dir=tmp_path / "nowhere")
    message = str(err.value)
    assert "\n" not in message
    assert f"--data-dir {tmp_path / 'nowhere'}" in message and "$RESNETLAB_DATA" in message
    assert "download disabled" in message and "codh.rois.ac.jp" in message
    monkeypatch.setitem(DATASETS, "fashion-mnist", replace(
        DATASETS["fashion-mnist"], debian_dir=str(tmp_path / "no-debian")))
    with pytest.raises(DataError, match=r"no-debian \(Debian package dataset-fashion-mnist\)"
                                        r".*run `sudo apt-get install dataset-fashion-mnist`"):
        locate("fashion-mnist", tmp_path / "nowhere")


def test_failed_download_is_reported(tmp_path, monkeypatch):
    def offline(url, timeout):
        raise urllib.error.URLError("Temporary failure in name resolution")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setenv("RESNETLAB_OFFLINE", "0")
    with pytest.raises(DataError, match=r"download into .*nowhere/mnist failed .*name resolution"):
        locate("mnist", tmp_path / "nowhere")


def test_unknown_name_suggests():
    with pytest.raises(ConfigError, match=r"'fashion_mnist' is unknown; did you mean fashion-mnist"):
        build("fashion_mnist")


def test_download_verifies_checksum(tmp_path, monkeypatch):
    payload = b"official bytes"
    served = []

    def fake_urlopen(url, timeout):
        served.append(url)
        return io.BytesIO(payload)
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    good = hashlib.md5(payload).hexdigest()
    datasets._fetch(("https://mirror-a/", "https://mirror-b/"), "f.gz", good, tmp_path / "f.gz")
    assert (tmp_path / "f.gz").read_bytes() == payload and served == ["https://mirror-a/f.gz"]
    with pytest.raises(datasets.DownloadError, match=r"mirror-b/g\.gz: MD5 .* does not match"):
        datasets._fetch(("https://mirror-a/", "https://mirror-b/"), "g.gz", "0" * 32,
                        tmp_path / "g.gz")
    assert not list(tmp_path.glob("g.gz*"))  # nothing half-downloaded left behind


def test_cifar_named_from_binary_batches(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        rows = rng.integers(0, 256, (20, 3073), dtype=np.uint8)
        rows[:, 0] = np.arange(20) % 10
        (folder / name).write_bytes(rows.tobytes())
    bundle = build("cifar10", data_dir=tmp_path, val_size=10, batch_size=16, download=False)
    assert bundle.input_shape == (3, 32, 32) and bundle.classes[0] == "airplane"
    assert bundle.meta["augment"] == "crop:4,flip" and len(bundle.meta["mean"]) == 3
    assert (bundle.train.num_samples, bundle.test.num_samples) == (90, 20)


def test_channel_and_size_conversion_match_prediction(mnist_dir, tmp_path):
    bundle = mnist(mnist_dir, in_chans=3, image_size=32)
    assert bundle.input_shape == (3, 32, 32)
    raw = load_named("mnist", mnist_dir, download_ok=False).test[0][3, 0]
    Image.fromarray(raw).save(tmp_path / "digit.png")
    x, labels = preprocess_inputs([tmp_path / "digit.png"], bundle.meta)
    test_x = torch.cat([xb for xb, _ in bundle.test])
    assert torch.equal(x[0], test_x[3]) and labels == [str(tmp_path / "digit.png")]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_same_batches_on_cpu_and_gpu(mnist_dir):
    kw = {"seed": 4, "augment": "crop:2,flip,erase:0.5,cutout:5"}
    cpu = collect(mnist(mnist_dir, **kw).train.epoch(1, start=2))
    gpu = [(x.cpu(), y.cpu()) for x, y in mnist(mnist_dir, device="cuda", **kw).train.epoch(1, start=2)]
    assert same(cpu, gpu)


@pytest.mark.skipif(not DEBIAN.joinpath("train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian package dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    data = load_named("fashion-mnist", download_ok=False)
    assert data.train[0].shape == (60000, 1, 28, 28) and len(data.test[1]) == 10000
    assert len(data.classes) == 10 and np.bincount(data.train[1]).tolist() == [6000] * 10
    bundle = build("fashion-mnist", download=False)
    assert (bundle.train.num_samples, bundle.val.num_samples) == (55000, 5000)
    assert bundle.classes[0] == "T-shirt/top" and abs(bundle.meta["mean"][0] - 0.286) < 0.002


@pytest.mark.parametrize("name,kwargs,flag", [
    ("mnist", {"target": "y"}, "--target"),
    ("mnist", {"val_dir": "v"}, "--val-dir"),
    ("csv:t.csv", {"in_chans": 3}, "--in-chans"),
    ("folder:x", {"target": "y"}, "--target"),
    ("zip:x", {}, "prefix 'zip:'"),
])
def test_options_that_would_be_ignored_are_refused(name, kwargs, flag):
    with pytest.raises(ConfigError, match=flag):
        build(name, **kwargs)


def test_cifar_archive_is_verified_and_extracted_safely(tmp_path, monkeypatch):
    """A user-supplied official tarball: MD5-checked, only regular batch files extracted."""
    rng = np.random.default_rng(1)
    archive = tmp_path / "data" / "cifar10" / "cifar-10-binary.tar.gz"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin", "../evil"]:
            rows = rng.integers(0, 256, (10, 3073), dtype=np.uint8)
            rows[:, 0] %= 10
            info = tarfile.TarInfo(name if name.startswith("..") else f"cifar-10-batches-bin/{name}")
            info.size = rows.nbytes
            tar.addfile(info, io.BytesIO(rows.tobytes()))
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(DATASETS, "cifar10", replace(
        DATASETS["cifar10"], files={"cifar-10-binary.tar.gz": md5}))
    bundle = build("cifar10", data_dir=tmp_path / "data", val_size=5, download=False)
    assert bundle.train.num_samples == 45 and bundle.test.num_samples == 10
    assert not (tmp_path / "data" / "evil").exists() and not (tmp_path / "evil").exists()
    monkeypatch.setitem(DATASETS, "cifar10", replace(
        DATASETS["cifar10"], files={"cifar-10-binary.tar.gz": "0" * 32}))
    (archive.parent / "cifar-10-batches-bin" / "test_batch.bin").unlink()
    with pytest.raises(DataError, match=r"cifar-10-binary\.tar\.gz: MD5 does not match"):
        locate("cifar10", tmp_path / "data")
