"""A ``torch.utils.data.Dataset`` as training data, read in minibatches through a ``DataLoader``.

:func:`stream` turns a map-style dataset (``len(ds)`` and ``ds[i]``, as
torchvision's data sets, a ``TensorDataset`` or your own class) into a
:class:`~mixvae.data.base.Dataset` whose training points stay where they
are: its ``train_x`` is a :class:`StreamedPoints`, which reads the points
each minibatch needs through a ``DataLoader`` (worker processes with
``workers > 0``; pinned memory when the model is on a GPU).  Data larger than
memory train; only the held-out set is read into memory, since every epoch
evaluates it.

An item is ``x`` or ``(x, y)``: ``x`` a tensor, numpy array or PIL image of
one point ((P,), (H, W), (C, H, W) or (H, W, C)), ``y`` an integer label.
Values follow :func:`~mixvae.data.arrays.to_points` (8-bit integers are
scaled by 1/255; NaN or inf is refused), checked minibatch by minibatch as
they are read.  The training order is mixvae's own (the run's seeded
permutation), so training on a stream equals training on the same points in
memory, and ``--resume`` continues exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mixvae.data.arrays import HELDOUT_FRACTION, SPLIT_SEED, split_heldout, to_points
from mixvae.data.base import Dataset
from mixvae.errors import DataError

#: the minibatch size of reads that are not training steps (encoding, evaluation)
READ_BATCH = 256
CPU = torch.device("cpu")
ITEM_FORM = "an item must be x or (x, y): x a tensor, numpy array or PIL image, y an integer label"


def _parts(item: Any) -> tuple[np.ndarray, Any]:
    if isinstance(item, tuple | list):
        if len(item) not in (1, 2):
            raise DataError(f"an item has {len(item)} parts; {ITEM_FORM}")
        x, y = item[0], (item[1] if len(item) == 2 else None)
    else:
        x, y = item, None
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x), y


@dataclass(frozen=True)
class _Failed:
    """A minibatch a worker could not stack: the reason, raised in the main process."""

    message: str


def _tensor_item(item: Any) -> bool:
    return isinstance(item, tuple | list) and len(item) in (1, 2) and isinstance(item[0], torch.Tensor)


class _Collate:
    """Stack the items of one minibatch as they come (in the loader's workers); labels alongside."""

    def __call__(self, items: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor | None] | _Failed:
        try:
            if all(_tensor_item(item) for item in items):
                # tensors (a TensorDataset, a transform's output): stacked as they are
                x = torch.stack([item[0] for item in items])
                ys = [item[1] if len(item) == 2 else None for item in items]
            else:
                xs, ys = zip(*(_parts(item) for item in items), strict=True)
                x = torch.from_numpy(np.stack(xs))
            y = None if any(v is None for v in ys) else torch.as_tensor([int(v) for v in ys])
        except (TypeError, ValueError, RuntimeError, DataError) as e:  # RuntimeError: torch.stack's
            return _Failed(str(e).splitlines()[0])
        return x, y


class _PointsCollate(_Collate):
    """Stack and convert a minibatch in the loader's worker (for :meth:`StreamedPoints.loader`)."""

    def __init__(self, points: StreamedPoints) -> None:
        self.points = points

    def __call__(self, items: Sequence[Any]) -> tuple[torch.Tensor]:  # type: ignore[override]
        x, _ = self.points._convert(
            super().__call__(items), f"a minibatch of the {type(self.points.source).__name__}"
        )
        return (x,)


@dataclass(frozen=True, eq=False)
class StreamedPoints:
    """The training points of a torch dataset, read minibatch by minibatch, never whole.

    It stands where the library reads training data from a ``(N, *data_shape)``
    tensor: ``len``, ``shape``, ``ndim``, ``dtype``, ``device``, ``to(device
    or dtype)``, ``split(batch_size)`` (the points in order, one minibatch at a
    time), indexing by an int, a slice, integer or boolean tensor (those points,
    read now), and :meth:`batches` (the training loop's minibatches in a given
    order).  Evaluation binarisation (:meth:`binarized`) draws each point's
    pixels from its own seeded stream, whichever minibatch reads it.

    :param source: the map-style dataset.
    :param indices: the positions in ``source`` of these points, in their order.
    :param data_shape: the shape of one point after conversion.
    :param workers: ``DataLoader`` worker processes (0: read in this process).
    """

    source: Any
    indices: torch.Tensor
    data_shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    device: torch.device = CPU
    workers: int = 0
    binarize_seed: int | None = None
    check: Callable[[torch.Tensor, str], None] | None = None

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self.data_shape))

    @property
    def ndim(self) -> int:
        return 1 + len(self.data_shape)

    def to(self, *args: Any, **kwargs: Any) -> StreamedPoints:
        """The same points delivered on another device or as another floating dtype."""
        device, dtype = self.device, self.dtype
        for a in (*args, *kwargs.values()):
            if isinstance(a, torch.dtype):
                dtype = a
            elif a is not None:
                device = torch.device(a)
        return dataclasses.replace(self, device=device, dtype=dtype)

    def binarized(self, seed: int) -> StreamedPoints:
        """The points binarised once: pixel ~ Bernoulli(value), each point from its own seeded draw."""
        return dataclasses.replace(self, binarize_seed=seed)

    def with_check(self, check: Callable[[torch.Tensor, str], None]) -> StreamedPoints:
        """The points with ``check(minibatch, what)`` run on every minibatch read (it raises on bad data)."""
        return dataclasses.replace(self, check=check)

    def _read(self, plan: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """The points at the positions of each tensor of ``plan`` (positions into :attr:`indices`)."""
        yield from (x for x, _ in self._read_labelled(plan))

    def _read_labelled(
        self, plan: Iterable[torch.Tensor]
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        plan = list(plan)
        batches = [self.indices[p].tolist() for p in plan]
        loader = torch.utils.data.DataLoader(
            self.source,
            batch_sampler=batches,
            num_workers=self.workers,
            collate_fn=_Collate(),
            pin_memory=self.device.type == "cuda",
            # its own generator: a loader otherwise draws its workers' seed from the global stream,
            # and training on a stream would differ from training on the same points in memory
            generator=torch.Generator().manual_seed(0),
        )
        for positions, raw in zip(plan, loader, strict=True):
            what = f"items {batches_text(self.indices[positions])} of the {type(self.source).__name__}"
            x, y = self._convert(raw, what)
            if self.binarize_seed is not None:
                x = _binarize(x, self.indices[positions], self.binarize_seed)
            yield x.to(self.device, non_blocking=True), y

    def _convert(
        self, raw: tuple[torch.Tensor, torch.Tensor | None] | _Failed, what: str
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A stacked minibatch as points: converted (:func:`~mixvae.data.arrays.to_points`), checked."""
        if isinstance(raw, _Failed):
            raise DataError(
                f"{what} do not stack into one minibatch ({raw.message}); {ITEM_FORM}, all of one shape"
            )
        x, y = raw
        x = to_points(x, what, self.dtype)
        if tuple(x.shape[1:]) != self.data_shape:
            raise DataError(
                f"{what} have shape {tuple(x.shape[1:])}, the first item {self.data_shape}; "
                "give every point one shape"
            )
        if self.check is not None:
            self.check(x, what)
        return x, y

    def loader(self, batch_size: int, *, shuffle: bool) -> torch.utils.data.DataLoader:
        """A ``DataLoader`` of ``(x,)`` minibatches of these points, for a trainer that brings its own
        sampler (Lightning shards it across processes); converted and checked in its workers."""
        return torch.utils.data.DataLoader(
            torch.utils.data.Subset(self.source, self.indices.tolist()),
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.workers,
            collate_fn=_PointsCollate(dataclasses.replace(self, device=CPU)),
            pin_memory=self.device.type == "cuda",
        )

    def batches(self, order: torch.Tensor, batch_size: int, start: int = 0) -> Iterator[torch.Tensor]:
        """Minibatches ``start``, ``start + 1``, ... of ``batch_size`` points in ``order`` (positions)."""
        order = order.cpu()
        plan = [order[i : i + batch_size] for i in range(start * batch_size, len(order), batch_size)]
        return self._read(plan)

    def split(self, batch_size: int) -> Iterator[torch.Tensor]:
        """The points in their order, ``batch_size`` at a time (as ``torch.Tensor.split``)."""
        return self.batches(torch.arange(len(self)), batch_size)

    def __getitem__(self, key: Any) -> torch.Tensor:
        positions = self._positions(key)
        parts = list(self._read(positions.split(READ_BATCH)))
        if not parts:
            return torch.empty((0, *self.data_shape), dtype=self.dtype, device=self.device)
        out = torch.cat(parts)
        return out[0] if isinstance(key, int) else out

    def labelled(self, key: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The points at ``key`` (as for indexing) and their labels."""
        xs, ys = [], []
        for x, y in self._read_labelled(self._positions(key).split(READ_BATCH)):
            if y is None:
                raise DataError(f"the items of the {type(self.source).__name__} carry no labels; {ITEM_FORM}")
            xs.append(x)
            ys.append(y)
        return torch.cat(xs), torch.cat(ys)

    def _positions(self, key: Any) -> torch.Tensor:
        n = len(self)
        if isinstance(key, int):
            return torch.arange(n)[key : key + 1 if key != -1 else None]
        if isinstance(key, slice):
            return torch.arange(n)[key]
        key = torch.as_tensor(key).cpu()
        if key.dtype == torch.bool:
            return key.nonzero().flatten()
        return torch.arange(n)[key.long()]

    def __repr__(self) -> str:
        return f"StreamedPoints({len(self)} points of shape {self.data_shape} from a {type(self.source).__name__})"


def batches_text(indices: torch.Tensor) -> str:
    """``3..258`` style text for the dataset indices of a minibatch."""
    lo, hi = int(indices.min()), int(indices.max())
    return f"{lo}..{hi}" if lo != hi else str(lo)


def _binarize(x: torch.Tensor, indices: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator(device=x.device)
    rows = [
        torch.bernoulli(row, generator=g.manual_seed(seed * 1_000_003 + int(i)))
        for row, i in zip(x, indices, strict=True)
    ]
    return torch.stack(rows)


def minibatches(
    x: torch.Tensor | StreamedPoints, order: torch.Tensor, batch_size: int, start: int = 0
) -> Iterator[torch.Tensor]:
    """Minibatches ``start``, ``start + 1``, ... of ``x`` in the permutation ``order``: slices of a
    tensor, or reads of a stream."""
    if isinstance(x, StreamedPoints):
        yield from x.batches(order, batch_size, start)
        return
    for i in range(start * batch_size, len(order), batch_size):
        yield x[order[i : i + batch_size]]


def stream(
    train: Any,
    test: Any = None,
    *,
    name: str | None = None,
    workers: int = 0,
    dtype: torch.dtype = torch.float32,
    heldout_fraction: float = HELDOUT_FRACTION,
    seed: int = SPLIT_SEED,
) -> Dataset:
    """A :class:`~mixvae.data.base.Dataset` that trains on ``train`` without reading it whole.

    :param train: a map-style ``torch.utils.data.Dataset`` of items ``x`` or ``(x, y)``.
    :param test: the held-out dataset (read into memory); default a seeded split of ``train``
        (``heldout_fraction`` of its items, permutation seed ``seed``; the same split as
        :func:`~mixvae.data.from_arrays` makes of the same points).
    :param name: what the run records as its data set (default ``stream:<class name>``).
    :param workers: ``DataLoader`` worker processes that read the minibatches (0: this process).
    :param dtype: the floating dtype of the points.
    """
    if isinstance(train, torch.utils.data.IterableDataset) or not hasattr(train, "__getitem__"):
        raise DataError(
            f"a {type(train).__name__} cannot be indexed; mixvae streams map-style datasets (len(ds), ds[i]) "
            "in its own seeded order: wrap it in one"
        )
    if not isinstance(workers, int) or workers < 0:
        raise DataError(f"workers must be a whole number >= 0, got {workers!r}")
    try:
        n = len(train)
    except TypeError:
        raise DataError(f"a {type(train).__name__} has no len(); give the dataset a __len__") from None
    if n == 0:
        raise DataError(f"the {type(train).__name__} is empty; give it data points")
    if test is None:
        keep, held = (torch.as_tensor(i) for i in split_heldout(n, heldout_fraction, seed))
        heldout_source = train
    else:
        keep, held, heldout_source = torch.arange(n), torch.arange(len(test)), test
        if len(test) == 0:
            raise DataError(
                f"the held-out {type(test).__name__} is empty; give it data points, or no test set"
            )
    first_x, first_y = _parts(train[int(keep[0])])
    shape = tuple(
        to_points(first_x[None], f"item {int(keep[0])} of the {type(train).__name__}", dtype).shape[1:]
    )
    points = StreamedPoints(train, keep, shape, dtype=dtype, workers=workers)
    heldout = StreamedPoints(heldout_source, held, shape, dtype=dtype, workers=workers)
    if first_y is None:
        test_x, test_y = heldout[:], None
    else:
        test_x, test_y = heldout.labelled(slice(None))
    return Dataset(name or f"stream:{type(train).__name__}", points, test_x, None, test_y)


__all__ = ["StreamedPoints", "minibatches", "stream"]
