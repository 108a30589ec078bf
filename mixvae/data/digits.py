"""scikit-learn's bundled 8x8 handwritten digits: no download needed."""

from __future__ import annotations

import numpy as np
import torch

from mixvae.data.base import DATASETS, Dataset

#: fraction of the 1,797 images held out, split with a fixed permutation
HELDOUT_FRACTION = 0.2


@DATASETS.register("digits")
def load_digits(data_dir: str | None = None, download: bool = True) -> Dataset:
    """The 1,797 8x8 digits of scikit-learn, scaled to [0, 1] (pixel / 16).

    A fixed permutation (seed 0) holds out 20% (360 images) as the test set.
    ``data_dir`` and ``download`` are ignored: the data ships with scikit-learn.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = torch.as_tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)  # (N, 1, 8, 8)
    y = torch.as_tensor(bunch.target, dtype=torch.long)
    order = torch.as_tensor(np.random.default_rng(0).permutation(len(x)))
    n_test = int(round(HELDOUT_FRACTION * len(x)))
    test, train = order[:n_test], order[n_test:]
    return Dataset("digits", x[train], x[test], y[train], y[test])


load_digits.data_shape = (1, 8, 8)  # type: ignore[attr-defined]  # read for mixvae 0.1 runs (flat data)
