"""Data sets, returned whole as tensors (they fit in memory).

``DATASETS`` is the registry the CLI and the Python API share.
"""

from __future__ import annotations

# The registration order is the order `mixvae list` shows: the demo's data first.
# isort: off
from mixvae.data import digits as _digits  # noqa: F401 - registers "digits"
from mixvae.data import mnist as _mnist  # noqa: F401 - registers "mnist", "fashion-mnist"
from mixvae.data import cifar as _cifar  # noqa: F401 - registers "cifar10"

# isort: on
from mixvae.data.base import DATASETS, EVAL_BINARIZE_SEED, Dataset, evaluation_data
from mixvae.data.idx import read_idx


def load_dataset(name: str, data_dir: str | None = None, download: bool = True) -> Dataset:
    """Load a registered data set by name (see ``DATASETS.names()``)."""
    return DATASETS[name](data_dir, download)


__all__ = ["DATASETS", "EVAL_BINARIZE_SEED", "Dataset", "evaluation_data", "load_dataset", "read_idx"]
