"""Decoders: p(x | z) for data flattened to vectors of length P."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam
from torch import nn

from mixvae.nn import mlp
from mixvae.options import NoOptions
from mixvae.registry import Registry

if TYPE_CHECKING:
    from mixvae.config import TrainConfig

LIKELIHOODS: Registry[type[Decoder]] = Registry("likelihood")


class Decoder(PyroModule):
    """An MLP from ``z`` to the parameters of p(x | z), independent over pixels.

    :param latent_dim: dimension D of ``z``.
    :param data_dim: dimension P of ``x``.
    :param hidden: hidden layer sizes; ``()`` gives a linear decoder.
    """

    #: whether x must lie in [0, 1]
    unit_interval: ClassVar[bool] = False
    story: ClassVar[str] = ""
    name: ClassVar[str] = ""
    #: the likelihood's own options (a dataclass of :func:`mixvae.options.option` fields)
    Options: ClassVar[type] = NoOptions

    def __init__(self, latent_dim: int, data_dim: int, hidden: Sequence[int] = (512, 512)) -> None:
        super().__init__()
        self.data_dim = data_dim
        self.net = mlp([latent_dim, *hidden, data_dim])

    @classmethod
    def from_config(cls, config: TrainConfig, data_dim: int) -> Decoder:
        """Build the decoder a training configuration asks for."""
        return cls(config.latent_dim, data_dim, config.hidden)

    def forward(self, z: torch.Tensor) -> dist.TorchDistribution:
        """p(x | z), batch shape ``z.shape[:-1]``, event shape (P,)."""
        raise NotImplementedError

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x | z], for reconstructions and sample figures."""
        raise NotImplementedError

    def log_likelihood(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x | z) summed over the P pixels, shape ``z.shape[:-1]`` (``x`` broadcasts).

        The same number as ``self(z).log_prob(x)``; subclasses may write it out
        without building the distribution object (the training and evaluation
        loops call it once per step or chunk).
        """
        return self(z).log_prob(x)


@LIKELIHOODS.register("bernoulli")
class BernoulliDecoder(Decoder):
    r""":math:`x_p \mid z \sim \mathrm{Bernoulli}(\mathrm{sigmoid}(f(z))_p)`, for data in [0, 1].

    Grey levels in (0, 1) are allowed; their log-likelihood is the negative
    binary cross-entropy, as in most VAE code.  Use ``--binarize dynamic`` for
    the usual binarised-MNIST likelihood.
    """

    unit_interval = True
    story = "x_p | z ~ Bernoulli(sigmoid(f(z))_p), data in [0, 1]"

    def forward(self, z: torch.Tensor) -> dist.TorchDistribution:
        # validate_args=False: grey levels are not in Bernoulli's {0, 1} support.
        return dist.Bernoulli(logits=self.net(z), validate_args=False).to_event(1)

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(z))

    def log_likelihood(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        logits, x = torch.broadcast_tensors(self.net(z), x)
        return -nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


@LIKELIHOODS.register("gaussian")
class GaussianDecoder(Decoder):
    r""":math:`x_p \mid z \sim \mathcal{N}(f(z)_p, s_p^2)` with a learned per-pixel scale :math:`s`."""

    story = "x_p | z ~ N(f(z)_p, s_p^2), s learned per pixel, real-valued data"

    def __init__(
        self,
        latent_dim: int,
        data_dim: int,
        hidden: Sequence[int] = (512, 512),
        init_scale: float = 1.0,
    ) -> None:
        super().__init__(latent_dim, data_dim, hidden)
        self.scale = PyroParam(torch.full((data_dim,), float(init_scale)), constraints.positive)

    def forward(self, z: torch.Tensor) -> dist.TorchDistribution:
        return dist.Normal(self.net(z), self.scale).to_event(1)

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)
