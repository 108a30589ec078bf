"""The in-memory data set every loader returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from mixvae.registry import Registry


@dataclass
class Dataset:
    """Train and held-out data as float tensors of shape (N, P), plus labels.

    :param name: registry name of the data set.
    :param train_x: training data, (N_train, P), float32.
    :param test_x: held-out data, (N_test, P), float32.
    :param train_y: integer labels of the training data, or ``None``.
    :param test_y: integer labels of the held-out data, or ``None``.
    :param image_shape: (height, width) for figures, or ``None``.
    """

    name: str
    train_x: torch.Tensor
    test_x: torch.Tensor
    train_y: torch.Tensor | None = None
    test_y: torch.Tensor | None = None
    image_shape: tuple[int, int] | None = None

    @property
    def data_dim(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def num_classes(self) -> int | None:
        return None if self.train_y is None else int(self.train_y.max()) + 1


#: loader(data_dir, download) -> Dataset
Loader = Callable[[str | None, bool], Dataset]
DATASETS: Registry[Loader] = Registry("dataset")


#: seed of the one-off binarisation of evaluation data (``--binarize dynamic``)
EVAL_BINARIZE_SEED = 12345


def evaluation_data(x: torch.Tensor, binarize: str) -> torch.Tensor:
    """The data as evaluation sees it: with ``--binarize dynamic``, binarised once with a fixed seed."""
    if binarize == "dynamic":
        g = torch.Generator(device=x.device).manual_seed(EVAL_BINARIZE_SEED)
        return torch.bernoulli(x, generator=g)
    return x
