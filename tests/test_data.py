"""Data loaders: real MNIST files, the digits split, and clear errors for bad files."""

from __future__ import annotations

import gzip
import shutil
import struct

import numpy as np
import pytest

from mixvae.data import load_dataset, read_idx
from mixvae.data.mnist import FILES
from mixvae.errors import DataError


def test_mnist_counts_come_from_the_header(mnist_dir):
    data = load_dataset("mnist", str(mnist_dir), download=False)
    assert data.train_x.shape == (23797, 1, 28, 28)  # the shared files hold the first 23,797
    assert data.test_x.shape == (10000, 1, 28, 28)
    assert data.train_y.shape == (23797,) and data.test_y.shape == (10000,)
    assert float(data.train_x.min()) == 0.0 and float(data.train_x.max()) == 1.0
    assert data.image_shape == (28, 28) and data.num_classes == 10
    # the first training label of MNIST is a 5
    assert int(data.train_y[0]) == 5


def test_torchvision_layout_is_found(mnist_dir, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in FILES.values():
        (raw / f).symlink_to(mnist_dir / f)
    assert len(load_dataset("mnist", str(tmp_path), download=False).test_x) == 10000


def test_digits_split():
    data = load_dataset("digits")
    assert len(data.train_x) + len(data.test_x) == 1797
    assert len(data.test_x) == 359
    assert data.train_x.min() >= 0 and data.train_x.max() <= 1
    assert data.image_shape == (8, 8)


def _write_idx(path, magic, dims, payload: bytes):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">i", magic) + struct.pack(">" + "i" * len(dims), *dims) + payload)


def test_truncated_gzip_is_a_clear_error(mnist_dir, tmp_path):
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = (mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="download it again"):
        read_idx(bad)


def test_short_payload_is_a_clear_error(tmp_path):
    path = tmp_path / "x.gz"
    _write_idx(path, 2049, (10,), bytes(5))
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(path)


def test_wrong_magic_number(tmp_path):
    path = tmp_path / "x.gz"
    _write_idx(path, 1234, (3,), bytes(3))
    with pytest.raises(DataError, match="magic number 1234"):
        read_idx(path)
    _write_idx(path, 2049, (3,), bytes(3))
    with pytest.raises(DataError, match="where images were expected"):
        read_idx(path, "images")
    assert np.array_equal(read_idx(path, "labels"), np.zeros(3, np.uint8))


def test_images_and_labels_with_different_counts(mnist_dir, tmp_path):
    for f in FILES.values():
        shutil.copy(mnist_dir / f, tmp_path / f)
    _write_idx(tmp_path / FILES["test_y"], 2049, (7,), bytes(7))
    with pytest.raises(DataError, match="10000 items but the labels file has 7"):
        load_dataset("mnist", str(tmp_path), download=False)


def test_missing_data_directory_names_the_files(tmp_path):
    with pytest.raises(DataError, match=r"does not exist; put train-images-idx3-ubyte\.gz"):
        load_dataset("fashion-mnist", str(tmp_path / "nope"), download=False)
