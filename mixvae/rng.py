"""A seeded torch random stream that leaves the caller's stream untouched."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def seeded(seed: int | None, device: torch.device | str | None = None) -> Iterator[None]:
    """Run the body on torch's global generator seeded with ``seed``, then restore it.

    Only torch's generators are forked and seeded (the CUDA one of ``device``
    too); Python's and NumPy's global generators are not touched, unlike
    :func:`pyro.set_rng_seed`.  ``seed=None`` runs the body on the caller's
    stream, for code that is itself called inside a seeded block.
    """
    if seed is None:
        yield
        return
    device = torch.device(device) if device is not None else None
    devices = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
