"""CIFAR-10 from the python-version folder (../shared/data/cifar10: 4,660 train / 846 test images)."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from mixvae import load_dataset
from mixvae.data.cifar import read_batch
from mixvae.errors import DataError
from tests.conftest import ROOT

CIFAR = ROOT.parent / "shared" / "data" / "cifar10"


def test_the_subset_loads_with_its_sizes_labels_and_pixel_layout():
    data = load_dataset("cifar10", str(CIFAR), download=False)
    assert data.train_x.shape == (4660, 3, 32, 32) and data.test_x.shape == (846, 3, 32, 32)
    assert data.num_classes == 10 and float(data.train_x.min()) == 0.0 and float(data.train_x.max()) == 1.0
    assert data.train_y[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]  # the official first labels
    with open(CIFAR / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="latin1")["data"]
    images, _ = read_batch(CIFAR / "cifar-10-batches-py" / "data_batch_1")
    assert images.shape == (932, 3, 32, 32)
    assert np.array_equal(images[0, 0].ravel(), raw[0, :1024])  # red plane first, row-major
    assert np.allclose(data.train_x[0].numpy().ravel() * 255, raw[0])


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_doctored_batch_cannot_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1], "x": _Payload()}))
    with pytest.raises(DataError, match=r"global 'posix.system' is forbidden"):
        read_batch(path)
    assert not (tmp_path / "pwned").exists()


def test_a_missing_folder_without_download_is_one_line(tmp_path):
    with pytest.raises(DataError, match="lacks cifar-10-batches-py/ with data_batch_1"):
        load_dataset("cifar10", str(tmp_path), download=False)
