"""IDX and CIFAR readers: round trips on files the tests write, and every bad-input error."""

from __future__ import annotations

import gzip
import os
import pickle
import struct

import numpy as np
import pytest

from resnetlab.data.readers.cifar import load_cifar, read_cifar_binary, read_cifar_python
from resnetlab.data.readers.idx import read_idx, read_idx_pair
from resnetlab.utils.errors import DataError


def write_idx(path, array, *, type_byte=0x08, gz=False):
    """Write ``array`` as an IDX file (big-endian dims), optionally gzipped."""
    header = bytes([0, 0, type_byte, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    with (gzip.open if gz else open)(path, "wb") as fh:
        fh.write(data)
    return path


@pytest.fixture
def idx_pair(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (7, 5, 4), dtype=np.uint8)
    y = rng.integers(0, 10, 7).astype(np.uint8)
    return x, y, tmp_path


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(idx_pair, gz):
    x, y, tmp = idx_pair
    images = write_idx(tmp / "img", x, gz=gz)
    labels = write_idx(tmp / "lab", y, gz=gz)
    rx, ry = read_idx_pair(images, labels, num_classes=10)
    assert rx.dtype == np.uint8 and ry.dtype == np.int64
    np.testing.assert_array_equal(rx, x)
    np.testing.assert_array_equal(ry, y)
    assert rx.flags.writeable


def test_idx_other_types_are_native_endian(tmp_path):
    values = np.arange(6, dtype=np.int32).reshape(2, 3) - 3
    out = read_idx(write_idx(tmp_path / "i32", values, type_byte=0x0C))
    np.testing.assert_array_equal(out, values)
    assert out.dtype == np.dtype("=i4")


def test_idx_wrong_magic_names_file(idx_pair):
    x, y, tmp = idx_pair
    images, labels = write_idx(tmp / "img", x), write_idx(tmp / "lab", y)
    with pytest.raises(DataError, match=r"lab: wrong magic number 2049 \(expected 2051: images"):
        read_idx_pair(labels, images)  # swapped
    (tmp / "junk").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20))
    with pytest.raises(DataError, match="junk: not an IDX file"):
        read_idx(tmp / "junk")


def test_idx_counts_disagree(idx_pair):
    x, y, tmp = idx_pair
    with pytest.raises(DataError, match=r"7 images but .*lab has 6 labels"):
        read_idx_pair(write_idx(tmp / "img", x), write_idx(tmp / "lab", y[:6]))


def test_idx_truncated_and_corrupt(idx_pair):
    x, _, tmp = idx_pair
    raw = write_idx(tmp / "img", x).read_bytes()
    (tmp / "short").write_bytes(raw[:-3])
    with pytest.raises(DataError, match=r"short: header says shape \(7, 5, 4\)"):
        read_idx(tmp / "short")
    gz = gzip.compress(raw)
    (tmp / "short.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(DataError, match=r"short\.gz: corrupt or truncated gzip"):
        read_idx(tmp / "short.gz")
    with pytest.raises(DataError, match="missing: file not found"):
        read_idx(tmp / "missing")


def test_idx_label_out_of_range_names_index(idx_pair):
    x, y, tmp = idx_pair
    y = y.copy()
    y[4] = 10
    with pytest.raises(DataError, match=r"lab: label 10 at index 4 is outside 0\.\.9"):
        read_idx_pair(write_idx(tmp / "img", x), write_idx(tmp / "lab", y), num_classes=10)


def cifar_records(n, classes, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, classes, n)
    return x, y


def write_cifar_binary(path, x, y, classes=10):
    prefix = [y[:, None] // 5, y[:, None]] if classes == 100 else [y[:, None]]
    rows = np.concatenate([*prefix, x.reshape(len(x), -1)], axis=1).astype(np.uint8)
    path.write_bytes(rows.tobytes())
    return path


@pytest.mark.parametrize("classes", [10, 100])
def test_cifar_binary_round_trip(tmp_path, classes):
    x, y = cifar_records(5, classes)
    rx, ry = read_cifar_binary(write_cifar_binary(tmp_path / "b.bin", x, y, classes),
                               num_classes=classes)
    np.testing.assert_array_equal(rx, x)
    np.testing.assert_array_equal(ry, y)


def test_cifar_binary_truncated_and_bad_label(tmp_path):
    x, y = cifar_records(3, 10)
    path = write_cifar_binary(tmp_path / "b.bin", x, y)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DataError, match=r"b\.bin: 9218 bytes is not a whole number of 3073-byte"):
        read_cifar_binary(path)
    y[1] = 12
    with pytest.raises(DataError, match=r"b\.bin: label 12 at index 1"):
        read_cifar_binary(write_cifar_binary(path, x, y))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_python_round_trip(tmp_path, protocol):
    x, y = cifar_records(4, 10)
    key = (lambda k: k.encode()) if protocol == 2 else (lambda k: k)  # Python 2 era keys
    batch = {key("data"): x.reshape(4, -1), key("labels"): y.tolist(), key("batch_label"): b"t"}
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    rx, ry = read_cifar_python(path)
    np.testing.assert_array_equal(rx, x)
    np.testing.assert_array_equal(ry, y)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalPayload(_Payload):
    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w')",))


@pytest.mark.parametrize("payload", [_Payload, _EvalPayload])
def test_restricted_unpickler_refuses_code(tmp_path, payload):
    marker = tmp_path / "pwned"
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": payload(marker), "labels": [0]}, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_1: refused to unpickle (posix\.system|__builtin__\.eval)"):
        read_cifar_python(path)
    assert not marker.exists()


def test_restricted_unpickler_refuses_object_arrays(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": np.array([{"a": 1}], dtype=object), "labels": [0]}))
    with pytest.raises(DataError, match="data_batch_1: not a CIFAR python batch"):
        read_cifar_python(path)


def test_load_cifar_folder_binary_and_python(tmp_path):
    x, y = cifar_records(12, 10)
    binary = tmp_path / "bin" / "cifar-10-batches-bin"
    binary.mkdir(parents=True)
    for i in range(1, 6):
        write_cifar_binary(binary / f"data_batch_{i}.bin", x[2 * i - 2:2 * i], y[2 * i - 2:2 * i])
    write_cifar_binary(binary / "test_batch.bin", x[10:], y[10:])
    (binary / "batches.meta.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n\n")
    data = load_cifar(tmp_path / "bin", 10)
    np.testing.assert_array_equal(data["train"][0], x[:10])
    np.testing.assert_array_equal(data["test"][1], y[10:])
    assert data["classes"] == [f"c{i}" for i in range(10)]

    py = tmp_path / "py" / "cifar-100-python"
    py.mkdir(parents=True)
    x, y = cifar_records(6, 100)
    for name, sl in (("train", slice(0, 4)), ("test", slice(4, 6))):
        batch = {b"data": x[sl].reshape(-1, 3072), b"fine_labels": y[sl].tolist()}
        (py / name).write_bytes(pickle.dumps(batch, protocol=2))
    data = load_cifar(tmp_path / "py", 100)
    np.testing.assert_array_equal(data["train"][0], x[:4])
    assert data["classes"] is None  # no meta file: the caller falls back to the known names
    with pytest.raises(DataError, match="no CIFAR-10 batches"):
        load_cifar(tmp_path / "py", 10)
