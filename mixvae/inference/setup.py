"""What both training loops (the plain one and Lightning's) check before the first step."""

from __future__ import annotations

import torch

from mixvae.config import TrainConfig
from mixvae.data import Dataset
from mixvae.errors import ConfigError, DataError
from mixvae.models import LIKELIHOODS


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    return device


def check_data(data: Dataset, config: TrainConfig) -> None:
    """Refuse data the likelihood cannot score, with the fix in the message."""
    for split, x in (("training", data.train_x), ("held-out", data.test_x)):
        if x.ndim != 2 or len(x) == 0:
            raise DataError(f"the {split} data must be a non-empty (N, P) tensor, got shape {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise DataError(
                f"the {split} data of {data.name!r} contains NaN or inf; clean or impute it first"
            )
        if LIKELIHOODS[config.likelihood].unit_interval and (x.min() < 0 or x.max() > 1):
            raise DataError(
                f"the {split} data lies in [{float(x.min()):.3g}, {float(x.max()):.3g}], outside the "
                f"[0, 1] the {config.likelihood} likelihood needs; rescale it or use --likelihood gaussian"
            )
    if data.test_x.shape[1] != data.train_x.shape[1]:
        raise DataError("training and held-out data have different numbers of columns")
    if config.batch_size > len(data.train_x):
        raise ConfigError(
            f"--batch-size {config.batch_size} is larger than the {len(data.train_x)} training "
            "points; use a smaller batch size"
        )
