"""Decoders: p(x | z) for data of any shape, (P,) or (C, H, W)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam
from pyro.nn.module import to_pyro_module_
from torch import nn

from mixvae.networks import MLPDecoder, data_shape_of
from mixvae.nn import reshape_flat_parameters
from mixvae.options import NoOptions
from mixvae.registry import Registry

if TYPE_CHECKING:
    from mixvae.config import TrainConfig

LIKELIHOODS: Registry[type[Decoder]] = Registry("likelihood")


class Decoder(PyroModule):
    """p(x | z): a decoder network from ``z`` to the likelihood's parameters, independent over values.

    The network (:mod:`mixvae.networks`: ``mlp``, ``conv`` or a user's module)
    maps ``z`` of shape ``(..., D)`` to ``(..., K, *data_shape)``, the K =
    :meth:`param_channels` parameters of every data value; the likelihood
    reads them.  ``x`` keeps its shape, ``(P,)`` or ``(C, H, W)``: the
    distribution's event shape is ``data_shape``.

    :param latent_dim: dimension D of ``z``.
    :param data_shape: shape of one ``x``: ``(P,)`` (an int P is taken as it) or ``(C, H, W)``.
    :param hidden: hidden layer sizes of the default MLP network; ``()`` gives a linear decoder.
    :param net: the decoder network; default an MLP with ``hidden`` layers.
    """

    #: the interval the data must lie in (``(0.0, 1.0)``), or ``None`` for real-valued data;
    #: the data checks read it, whatever the class is called
    support: ClassVar[tuple[float, float] | None] = None
    story: ClassVar[str] = ""
    name: ClassVar[str] = ""
    #: the likelihood's own options (a dataclass of :func:`mixvae.options.option` fields)
    Options: ClassVar[type] = NoOptions
    #: when log p(x | z) is a probability mass over this many levels of every value (8-bit
    #: images: 256), the evaluation reports bits per dimension; ``None`` for densities
    discrete_levels: ClassVar[int | None] = None

    def __init__(
        self,
        latent_dim: int,
        data_shape: int | Sequence[int],
        hidden: Sequence[int] = (512, 512),
        *,
        net: nn.Module | None = None,
        channels: int | None = None,
    ) -> None:
        super().__init__()
        self.data_shape = data_shape_of(data_shape)
        self.latent_dim = latent_dim
        #: K, the parameters per data value the network makes (default :meth:`param_channels`)
        self.channels = self.param_channels() if channels is None else int(channels)
        self.net = MLPDecoder(latent_dim, hidden, self.data_shape, self.channels) if net is None else net
        to_pyro_module_(self.net)

    @property
    def unit_interval(self) -> bool:
        """Whether the data must lie in [0, 1] (read from :meth:`data_support`)."""
        return self.data_support() == (0.0, 1.0)

    @classmethod
    def data_support(cls) -> tuple[float, float] | None:
        """The declared :attr:`support`; a mixvae 0.1 subclass's ``unit_interval = True`` counts as (0, 1)."""
        if cls.support is None and getattr(cls, "unit_interval", None) is True:
            return (0.0, 1.0)
        return cls.support

    @property
    def data_dim(self) -> int:
        """The number P of values of one ``x``."""
        return math.prod(self.data_shape)

    @property
    def event_dims(self) -> int:
        """The number of data axes, ``len(data_shape)``: the event dimensions of p(x | z)."""
        return len(self.data_shape)

    @classmethod
    def param_channels(cls, config: TrainConfig | None = None) -> int:
        """K, the number of parameters the network makes per data value (1: one logit, one mean)."""
        return 1

    @classmethod
    def from_config(cls, config: TrainConfig, data_shape: tuple[int, ...], net: nn.Module) -> Decoder:
        """Build the decoder a training configuration asks for, around the decoder network ``net``
        (``(..., D) -> (..., param_channels(config), *data_shape)``, made by the configured network)."""
        return cls(config.latent_dim, data_shape, net=net)

    def params(self, z: torch.Tensor) -> torch.Tensor:
        """The network's output: shape ``z.shape[:-1] + (K, *data_shape)``, or
        ``z.shape[:-1] + data_shape`` when K = 1."""
        return self.net(z)

    def param(self, z: torch.Tensor, k: int = 0) -> torch.Tensor:
        """The ``k``-th parameter of every value, shape ``z.shape[:-1] + data_shape``."""
        out = self.net(z)
        return out if self.channels == 1 else out.select(-self.event_dims - 1, k)

    def forward(self, z: torch.Tensor) -> dist.TorchDistribution:
        """p(x | z), batch shape ``z.shape[:-1]``, event shape ``data_shape``."""
        raise NotImplementedError

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x | z], for reconstructions and sample figures; shape ``z.shape[:-1] + data_shape``."""
        raise NotImplementedError

    def log_likelihood(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x | z) summed over the data values, shape ``z.shape[:-1]`` (``x`` broadcasts).

        The same number as ``self(z).log_prob(x)``; subclasses may write it out
        without building the distribution object (the training and evaluation
        loops call it once per step or chunk).
        """
        return self(z).log_prob(x)

    def sum_values(self, values: torch.Tensor) -> torch.Tensor:
        """Sum a per-value tensor ``(..., *data_shape)`` over the data axes."""
        return values.flatten(-self.event_dims).sum(-1)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object, **kwargs: object) -> None:
        reshape_flat_parameters(self, state_dict, prefix)  # a mixvae 0.1 run's flat learned scale
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@LIKELIHOODS.register("bernoulli")
class BernoulliDecoder(Decoder):
    r""":math:`x_p \mid z \sim \mathrm{Bernoulli}(\mathrm{sigmoid}(f(z))_p)`, for data in [0, 1].

    Grey levels in (0, 1) are allowed; their log-likelihood is the negative
    binary cross-entropy, as in most VAE code.  Use ``--binarize dynamic`` for
    the usual binarised-MNIST likelihood.
    """

    support = (0.0, 1.0)
    discrete_levels = 2  # a mass on binary data (--binarize dynamic), not on grey levels
    story = "x_p | z ~ Bernoulli(sigmoid(f(z))_p), data in [0, 1]"

    def forward(self, z: torch.Tensor) -> dist.TorchDistribution:
        # validate_args=False: grey levels are not in Bernoulli's {0, 1} support.
        return dist.Bernoulli(logits=self.param(z), validate_args=False).to_event(self.event_dims)

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.param(z))

    def log_likelihood(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        logits, x = torch.broadcast_tensors(self.param(z), x)
        return -self.sum_values(nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none"))


@LIKELIHOODS.register("gaussian")
class GaussianDecoder(Decoder):
    r""":math:`x_p \mid z \sim \mathcal{N}(f(z)_p, s_p^2)` with a learned per-pixel scale :math:`s`."""

    story = "x_p | z ~ N(f(z)_p, s_p^2), s learned per pixel, real-valued data"

    def __init__(
        self,
        latent_dim: int,
        data_shape: int | Sequence[int],
        hidden: Sequence[int] = (512, 512),
        init_scale: float = 1.0,
        *,
        net: nn.Module | None = None,
    ) -> None:
        super().__init__(latent_dim, data_shape, hidden, net=net)
        self.scale = PyroParam(torch.full(self.data_shape, float(init_scale)), constraints.positive)

    def forward(self, z: torch.Tensor) -> dist.TorchDistribution:
        return dist.Normal(self.param(z), self.scale).to_event(self.event_dims)

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        return self.param(z)
