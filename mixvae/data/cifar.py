"""CIFAR-10 from the official "python version" folder, read without running code from the files.

``DIR/cifar-10-batches-py/`` (as ``cifar-10-python.tar.gz`` extracts; also
found in ``DIR`` itself) holds ``data_batch_1`` .. ``data_batch_5`` and
``test_batch``: pickled dicts with ``"data"`` (uint8, one row per image:
1,024 red, 1,024 green, 1,024 blue values of a row-major 32x32 image) and
``"labels"``.  A pickle can name any Python callable, so the files are read by
:class:`RestrictedUnpickler`, which accepts only what the format contains
(dicts, lists, strings, numbers and numpy's array reconstruction): a doctored
file cannot run code.  The number of images is read from each file (the
official batches hold 10,000, a subset fewer).  Missing files are downloaded
from the official URL and checked against the tarball's md5, unless
``download=False``.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mixvae.data.base import DATASETS, Dataset
from mixvae.errors import DataError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
TARBALL_MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
IMAGE_SHAPE = (3, 32, 32)

#: the globals a CIFAR-10 batch may name: numpy's array reconstruction (numpy 1 and 2 module
#: paths) and, in the official Python 2 pickles, ``_codecs.encode`` for their byte strings
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only plain containers, numbers, strings and numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is forbidden")


def read_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The images (N, 3, 32, 32, uint8) and labels (N,) of one CIFAR-10 batch file.

    :raises DataError: for a file that is not a readable batch, or that names a forbidden global.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            batch = RestrictedUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise DataError(
            f"{path} is refused: {e}; a CIFAR-10 batch holds only arrays, lists and strings, so this "
            "file was altered: delete it and download it again"
        ) from None
    except (OSError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise DataError(
            f"{path} is not a readable CIFAR-10 batch ({e}); delete it and download it again"
        ) from None
    if not isinstance(batch, dict):
        raise DataError(f"{path} is not a CIFAR-10 batch (a {type(batch).__name__}, not a dict)")
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path} has no (N, 3072) uint8 'data' array; delete it and download it again")
    if not isinstance(labels, list) or len(labels) != len(data):
        raise DataError(
            f"{path}: 'labels' does not match the {len(data)} images; delete it and download it again"
        )
    return data.reshape(len(data), *IMAGE_SHAPE), np.asarray(labels, dtype=np.int64)


def _folder(root: Path) -> Path | None:
    for cand in (root / FOLDER, root):
        if all((cand / f).is_file() for f in (*TRAIN_FILES, TEST_FILE)):
            return cand
    return None


def fetch(root: Path) -> None:
    """Fetch the official tarball into ``root``, check its md5, extract the batches."""
    root.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(URL, timeout=60) as r:
            blob = r.read()
    except OSError as e:
        raise DataError(
            f"could not download CIFAR-10 ({e}); extract cifar-10-python.tar.gz from {URL} into {root} "
            "and run again"
        ) from None
    if hashlib.md5(blob).hexdigest() != TARBALL_MD5:
        raise DataError(f"the download of {URL} does not have the official md5 {TARBALL_MD5}; try again")
    with tempfile.TemporaryDirectory(dir=root) as tmp, tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(f"{FOLDER}/")]
        tar.extractall(tmp, members=members, filter="data")
        target = root / FOLDER
        if target.exists():
            shutil.rmtree(target)
        os.replace(Path(tmp) / FOLDER, target)


@DATASETS.register("cifar10")
def load_cifar10(data_dir: str | None = None, download: bool = True) -> Dataset:
    """CIFAR-10 (Krizhevsky 2009): 32x32 colour images, 10 classes; pixels scaled to [0, 1]."""
    from mixvae.data.mnist import default_data_dir

    root = Path(data_dir).expanduser() if data_dir else default_data_dir("cifar10")
    folder = _folder(root)
    if folder is None and download:
        fetch(root)
        folder = _folder(root)
    if folder is None:
        raise DataError(
            f"CIFAR-10 folder {root} lacks {FOLDER}/ with {', '.join(TRAIN_FILES)} and {TEST_FILE}; "
            f"extract cifar-10-python.tar.gz there, pass --data-dir, or allow the download"
        )
    train = [read_batch(folder / f) for f in TRAIN_FILES]
    test_x, test_y = read_batch(folder / TEST_FILE)

    def flat(x: np.ndarray) -> torch.Tensor:  # (N, 3, 32, 32) in [0, 1]
        return torch.as_tensor(x, dtype=torch.float32) / 255.0

    return Dataset(
        "cifar10",
        train_x=flat(np.concatenate([x for x, _ in train])),
        test_x=flat(test_x),
        train_y=torch.as_tensor(np.concatenate([y for _, y in train])),
        test_y=torch.as_tensor(test_y),
    )


load_cifar10.data_shape = IMAGE_SHAPE  # type: ignore[attr-defined]
