"""The guide of the Dilokthanakul et al. GMVAE: q(w | x) q(z | x)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from mixvae.guides.base import GUIDES, Guide
from mixvae.nn import positive
from mixvae.options import option
from mixvae.sites import Site

if TYPE_CHECKING:
    from mixvae.config import TrainConfig


@GUIDES.register("dilokthanakul")
class DilokthanakulGuide(Guide):
    r"""Gaussian encoders for both continuous latents of the ``dilokthanakul`` prior.

    .. math::

        q(w, z \mid x) = \mathcal{N}(w; \mu_w(x), \mathrm{diag}\,\sigma_w(x)^2)\,
                         \mathcal{N}(z; \mu_z(x), \mathrm{diag}\,\sigma_z(x)^2)

    The component ``c`` is not in the guide: the model sums it out exactly.

    :param data_shape: shape of one ``x``: ``(P,)`` (or an int P) or ``(C, H, W)``.
    :param latent_dim: dimension D of ``z``.
    :param w_dim: dimension W of ``w``.
    :param hidden: hidden layer sizes of the default MLP body.
    :param body: the shared encoder body (see :mod:`mixvae.networks`); default an MLP.
    """

    sites = (Site("w", "w_dist"), Site("z", "z_dist"))

    @dataclass
    class Options:
        w_dim: int | None = option(None, "dimension of w (default: --latent-dim)", minimum=1)

    story = "q(w|x) q(z|x), both diagonal Gaussians; for the dilokthanakul prior"

    def __init__(
        self,
        data_shape: int | Sequence[int],
        latent_dim: int,
        w_dim: int,
        hidden: Sequence[int] = (512, 512),
        *,
        body: nn.Module | None = None,
    ) -> None:
        super().__init__(data_shape, latent_dim)
        self.w_dim = w_dim
        self.body = self.default_body(hidden) if body is None else body
        width = self.body.out_features
        self.z_head = nn.Linear(width, 2 * latent_dim)
        self.w_head = nn.Linear(width, 2 * w_dim)
        pyro.nn.module.to_pyro_module_(self)

    @classmethod
    def from_config(
        cls, config: TrainConfig, data_shape: tuple[int, ...], body: nn.Module
    ) -> DilokthanakulGuide:
        return cls(data_shape, config.latent_dim, config.w_dim or config.latent_dim, body=body)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    @staticmethod
    def _gaussian(out: torch.Tensor) -> dist.TorchDistribution:
        loc, raw = out.chunk(2, dim=-1)
        return dist.Normal(loc, positive(raw)).to_event(1)

    def w_dist(self, h: torch.Tensor, values: Mapping[str, torch.Tensor]) -> dist.TorchDistribution:
        return self._gaussian(self.w_head(h))

    def z_dist(self, h: torch.Tensor, values: Mapping[str, torch.Tensor]) -> dist.TorchDistribution:
        return self._gaussian(self.z_head(h))
