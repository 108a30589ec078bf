"""The in-memory data set every loader returns."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from mixvae.registry import Registry


class Points(Protocol):
    """What the library reads training points through: a ``(N, *data_shape)`` tensor, or
    the :class:`~mixvae.data.streaming.StreamedPoints` that stand in for one."""

    @property
    def shape(self) -> torch.Size: ...

    def __len__(self) -> int: ...

    def __getitem__(self, key: Any) -> torch.Tensor: ...

    def split(self, batch_size: int) -> Any: ...

    def to(self, *args: Any, **kwargs: Any) -> Any: ...


@dataclass
class Dataset:
    """Train and held-out data as float tensors, (N, P) vectors or (N, C, H, W) images, plus labels.

    :param name: registry name of the data set.
    :param train_x: training data, (N_train, P) or (N_train, C, H, W), float; or the
        :class:`~mixvae.data.streaming.StreamedPoints` of a torch dataset (:func:`mixvae.data.stream`).
    :param test_x: held-out data of the same shape per point.
    :param train_y: integer labels of the training data, or ``None``.
    :param test_y: integer labels of the held-out data, or ``None``.
    :param image_shape: (height, width) for figures, or ``None``; read from the data
        when they are images (C, H, W).
    """

    name: str
    train_x: torch.Tensor | Points
    test_x: torch.Tensor
    train_y: torch.Tensor | None = None
    test_y: torch.Tensor | None = None
    image_shape: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.image_shape is None and self.train_x.ndim == 4:
            self.image_shape = (int(self.train_x.shape[2]), int(self.train_x.shape[3]))

    @property
    def data_shape(self) -> tuple[int, ...]:
        """The shape of one data point: (P,) or (C, H, W)."""
        return tuple(int(s) for s in self.train_x.shape[1:])

    @property
    def data_dim(self) -> int:
        """The number P of values of one data point."""
        return math.prod(self.data_shape)

    def to(self, dtype: torch.dtype) -> Dataset:
        """The same data with tensors of the floating ``dtype`` (itself when they already are)."""
        if self.train_x.dtype == dtype and self.test_x.dtype == dtype:
            return self
        return dataclasses.replace(self, train_x=self.train_x.to(dtype), test_x=self.test_x.to(dtype))

    @property
    def num_classes(self) -> int | None:
        labels = self.train_y if self.train_y is not None else self.test_y
        return None if labels is None else int(labels.max()) + 1

    @property
    def streamed(self) -> bool:
        """Whether the training points are read through a DataLoader (:func:`mixvae.data.stream`)."""
        return not isinstance(self.train_x, torch.Tensor)


#: loader(data_dir, download) -> Dataset
Loader = Callable[[str | None, bool], Dataset]
DATASETS: Registry[Loader] = Registry("dataset")


#: seed of the one-off binarisation of evaluation data (``--binarize dynamic``)
EVAL_BINARIZE_SEED = 12345


def evaluation_data(x: torch.Tensor | Points, binarize: str) -> torch.Tensor | Points:
    """The data as evaluation sees it: with ``--binarize dynamic``, binarised once with a fixed seed."""
    if binarize == "dynamic" and not isinstance(x, torch.Tensor):  # streamed: binarised as read
        return x.binarized(EVAL_BINARIZE_SEED)  # type: ignore[attr-defined]
    if binarize == "dynamic":
        g = torch.Generator(device=x.device).manual_seed(EVAL_BINARIZE_SEED)
        return torch.bernoulli(x, generator=g)
    return x
