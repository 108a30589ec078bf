"""The diagonal-Gaussian encoder."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import pyro.distributions as dist
import torch

from mixvae.guides.base import GUIDES, Guide
from mixvae.nn import mlp, positive
from mixvae.sites import Site

if TYPE_CHECKING:
    from mixvae.config import TrainConfig


@GUIDES.register("gaussian")
class GaussianGuide(Guide):
    r"""The standard amortised Gaussian encoder.

    .. math::

        q(z \mid x) = \mathcal{N}(\mu(x), \mathrm{diag}\,\sigma(x)^2)

    :param data_dim: dimension P of ``x``.
    :param latent_dim: dimension D of ``z``.
    :param hidden: hidden layer sizes of the encoder MLP.
    """

    sites = (Site("z", "z_dist"),)
    story = "q(z|x) = N(mu(x), diag sigma(x)^2)"

    def __init__(self, data_dim: int, latent_dim: int, hidden: Sequence[int] = (512, 512)) -> None:
        super().__init__(data_dim, latent_dim)
        self.net = mlp([data_dim, *hidden, 2 * latent_dim])

    @classmethod
    def from_config(cls, config: TrainConfig, data_dim: int) -> GaussianGuide:
        return cls(data_dim, config.latent_dim, config.hidden)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loc, scale)``, each of shape (B, D)."""
        loc, raw = self.encode(x).chunk(2, dim=-1)
        return loc, positive(raw)

    def z_dist(self, h: torch.Tensor, values: Mapping[str, torch.Tensor]) -> dist.TorchDistribution:
        loc, raw = h.chunk(2, dim=-1)
        return dist.Normal(loc, positive(raw)).to_event(1)

    def diag_components(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loc, scale = self.params(x)
        return loc.new_zeros(loc.shape[:-1] + (1,)), loc.unsqueeze(-2), scale.unsqueeze(-2)
