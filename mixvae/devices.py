"""The torch device a run asks for (``--device``), checked against what this machine has."""

from __future__ import annotations

from typing import Any

from mixvae.errors import ConfigError


def resolve_device(name: str) -> Any:
    """The :class:`torch.device` named by ``--device``, checked against what this machine has."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {name!r}; use cpu or cuda (cuda:N for GPU N)") from None
    if device.type == "cpu" and device.index not in (None, 0):
        raise ConfigError(f"--device {name}: there is one cpu device; use --device cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name} was asked for but no CUDA GPU is available; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s) (cuda:0 ...); "
                "choose one of them"
            )
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"--device {name} was asked for but MPS is not available; use --device cpu")
    elif device.type != "cpu":
        raise ConfigError(f"--device {name}: mixvae trains on cpu, cuda or mps; use one of them")
    return device
