"""Network building blocks shared by the models and the guides."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import pyro
import torch
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_
from torch import nn

from mixvae.errors import DataError

_instance_ids = itertools.count()


def unique_pyro_name(obj: object) -> str:
    """A Pyro name prefix that no other live mixvae module shares.

    Pyro's global parameter store is keyed by name; two models built in one
    process with the default empty prefix would silently share parameters.
    """
    return f"{type(obj).__name__.lower()}{next(_instance_ids)}"


def mlp(sizes: Sequence[int], activation: type[nn.Module] = nn.ReLU) -> PyroModule:
    """A multi-layer perceptron ``sizes[0] -> ... -> sizes[-1]``.

    An activation follows every layer except the last, so ``mlp([d, k])`` is a
    plain affine map.  The result is a :class:`~pyro.nn.PyroModule` so that its
    weights are Pyro parameters, visible both to ``torch.optim`` and to
    ``pyro.optim`` through :class:`~pyro.infer.SVI`.
    """
    if len(sizes) < 2:
        raise ValueError("an MLP needs at least an input and an output size")
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(activation())
    net = nn.Sequential(*layers)
    to_pyro_module_(net)
    return net  # type: ignore[return-value]


def positive(raw: torch.Tensor, minimum: float = 1e-4) -> torch.Tensor:
    """Softplus map to scales bounded away from zero."""
    return nn.functional.softplus(raw) + minimum


def data_plate(x: torch.Tensor | None, num_data: int | None, batch_size: int | None = None) -> pyro.plate:
    """The ``"data"`` plate over a minibatch ``x`` drawn from ``num_data`` points.

    The minibatch is used as it is: the plate only supplies the
    ``num_data / len(x)`` scale and draws no random indices (which is also what
    data-parallel workers need).  ``num_data=None`` means ``x`` is the whole set.
    Without data (``x=None``, the model's generative mode) the plate has
    ``batch_size`` points (default 1) and no scale.
    """
    if x is None:
        return pyro.plate("data", 1 if batch_size is None else int(batch_size))
    batch = x.shape[0]
    size = batch if num_data is None else int(num_data)
    return pyro.plate("data", size, subsample=torch.arange(batch, device=x.device))


def check_batch(x: torch.Tensor, data_shape: Sequence[int]) -> None:
    """Refuse, in one line, a minibatch whose points are not of the shape the model was built for."""
    if tuple(x.shape[1:]) != tuple(data_shape):
        hint = (
            "flatten it (x.flatten(1))"
            if len(data_shape) == 1 and math.prod(x.shape[1:]) == data_shape[0]
            else "build the model with data.data_shape"
        )
        raise DataError(
            f"a minibatch of shape {tuple(x.shape)} for a model built for points of shape "
            f"{tuple(data_shape)}; {hint}"
        )


def reshape_flat_parameters(module: nn.Module, state_dict: dict, prefix: str) -> None:
    """Give a mixvae 0.1 state dict's flat own parameters (its images were flat: a learned
    per-pixel scale (P,), pseudo-inputs (K, P)) the module's shapes, where the sizes agree.
    Called from ``_load_from_state_dict``; the module's submodules do their own."""
    for name, own in module._parameters.items():
        old = state_dict.get(prefix + name)
        if own is not None and old is not None and old.shape != own.shape and old.numel() == own.numel():
            state_dict[prefix + name] = old.reshape(own.shape)
