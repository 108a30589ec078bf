"""The optimiser of every training loop."""

from __future__ import annotations

from collections.abc import Iterable

import torch

_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def adam(params: Iterable[torch.Tensor], lr: float) -> torch.optim.Adam:
    """torch's Adam over ``params``, with its fused kernel wherever every parameter allows it.

    The fused update is the same update (to float rounding) in one kernel
    instead of a Python loop of five tensor operations per parameter: for the
    784-512-512 VAE's parameters on the 2-core CPU it took 0.83 ms a step
    against 2.93 ms.  Parameters on devices or of dtypes the kernel does not
    support get the default implementation.
    """
    params = list(params)
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype in _FUSED_DTYPES for p in params)
    return torch.optim.Adam(params, lr=lr, fused=True if fused else None)
