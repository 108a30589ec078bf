"""Data sets: the registered ones (``DATASETS``, shared by the CLI and the Python API) and your
own arrays, ``.npz`` / ``.npy`` files and folders of images (:mod:`mixvae.data.arrays`), all in
memory as tensors, and torch datasets read through a DataLoader (:mod:`mixvae.data.streaming`).
"""

from __future__ import annotations

# The registration order is the order `mixvae list` shows: the demo's data first.
# isort: off
from mixvae.data import digits as _digits  # noqa: F401 - registers "digits"
from mixvae.data import mnist as _mnist  # noqa: F401 - registers "mnist", "fashion-mnist"
from mixvae.data import cifar as _cifar  # noqa: F401 - registers "cifar10"

# isort: on
from pathlib import Path
from typing import Any

import torch

from mixvae.data.arrays import from_arrays, load_path
from mixvae.data.base import DATASETS, EVAL_BINARIZE_SEED, Dataset, evaluation_data
from mixvae.data.idx import read_idx
from mixvae.data.streaming import StreamedPoints, minibatches, stream
from mixvae.errors import UnknownNameError


def is_data_path(name: str) -> bool:
    """Whether ``--dataset NAME`` names a file or folder rather than a registered data set."""
    if name in DATASETS:
        return False
    path = Path(name).expanduser()
    return path.exists() or "/" in name or path.suffix.lower() in (".npz", ".npy")


def load_dataset(
    name: str | Path,
    data_dir: str | None = None,
    download: bool = True,
    *,
    dtype: torch.dtype = torch.float32,
) -> Dataset:
    """Load a registered data set by name (see ``DATASETS.names()``), or the data at a path:
    an ``.npz`` / ``.npy`` file or a folder of images (:mod:`mixvae.data.arrays`).

    :param dtype: the floating dtype of the returned tensors.
    :raises UnknownNameError: for a name that is neither registered nor a path.
    """
    name = str(name)
    if name in DATASETS:
        return DATASETS[name](data_dir, download).to(dtype)
    if is_data_path(name):
        return load_path(name, dtype)
    raise UnknownNameError(
        f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS.names())}, or give the path of an "
        ".npz / .npy file or a folder of images"
    )


def as_dataset(data: Any, dtype: torch.dtype = torch.float32) -> Dataset:
    """The :class:`Dataset` of what a user passes as data: a :class:`Dataset` (cast to ``dtype``),
    a ``torch.utils.data.Dataset`` (streamed, :func:`stream`), or arrays / tensors of points
    (:func:`from_arrays`)."""
    if isinstance(data, Dataset):
        return data.to(dtype)
    if isinstance(data, torch.utils.data.Dataset):
        return stream(data, dtype=dtype)
    return from_arrays(data, dtype=dtype)


__all__ = [
    "DATASETS",
    "EVAL_BINARIZE_SEED",
    "Dataset",
    "StreamedPoints",
    "as_dataset",
    "evaluation_data",
    "from_arrays",
    "is_data_path",
    "load_dataset",
    "load_path",
    "minibatches",
    "read_idx",
    "stream",
]
