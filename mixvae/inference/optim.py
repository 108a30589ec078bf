"""The optimiser of every training loop."""

from __future__ import annotations

from collections.abc import Iterable

import torch

_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def decays(name: str, param: torch.Tensor) -> bool:
    """Whether ``--weight-decay`` applies to a parameter: the weight matrices and kernels of the
    networks (a parameter named ``weight`` with at least two dimensions: linear, convolutional and
    embedding layers), not biases, normalisation scales or a prior's own parameters."""
    return name.rsplit(".", 1)[-1] == "weight" and param.dim() >= 2


def adam(
    params: Iterable[torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
    lr: float,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """torch's Adam over ``params``, with its fused kernel wherever every parameter allows it.

    The fused update is the same update (to float rounding) in one kernel
    instead of a Python loop of five tensor operations per parameter: for the
    784-512-512 VAE's parameters on the 2-core CPU it took 0.83 ms a step
    against 2.93 ms.  Parameters on devices or of dtypes the kernel does not
    support get the default implementation.

    With ``weight_decay > 0`` it is torch's AdamW (decoupled weight decay,
    Loshchilov & Hutter 2019): each step first shrinks every parameter that
    :func:`decays` by the factor ``1 - lr * weight_decay``, then makes Adam's
    update; ``params`` must then be ``(name, tensor)`` pairs, as
    ``module.named_parameters()`` gives them.
    """
    items = list(params)
    tensors = [p[1] if isinstance(p, tuple) else p for p in items]
    fused = (
        True if all(p.device.type in ("cpu", "cuda") and p.dtype in _FUSED_DTYPES for p in tensors) else None
    )
    if weight_decay == 0:
        return torch.optim.Adam(tensors, lr=lr, fused=fused)
    if not all(isinstance(p, tuple) for p in items):
        raise ValueError("adam(weight_decay > 0) needs (name, parameter) pairs, as named_parameters() gives")
    seen: set[int] = set()
    decay, rest = [], []
    for name, p in items:
        if id(p) not in seen:  # a module shared by the model and the guide is listed twice
            seen.add(id(p))
            (decay if decays(name, p) else rest).append(p)
    groups = [
        {"params": group, "weight_decay": wd} for group, wd in ((decay, weight_decay), (rest, 0.0)) if group
    ]
    return torch.optim.AdamW(groups, lr=lr, fused=fused)
