"""The diagonal-Gaussian encoder."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import pyro.distributions as dist
import torch
from pyro.nn.module import to_pyro_module_
from torch import nn

from mixvae.guides.base import GUIDES, Guide, legacy_mlp_keys
from mixvae.nn import positive
from mixvae.sites import Site

if TYPE_CHECKING:
    from mixvae.config import TrainConfig


@GUIDES.register("gaussian")
class GaussianGuide(Guide):
    r"""The standard amortised Gaussian encoder.

    .. math::

        q(z \mid x) = \mathcal{N}(\mu(x), \mathrm{diag}\,\sigma(x)^2)

    :param data_shape: shape of one ``x``: ``(P,)`` (an int P is taken as it) or ``(C, H, W)``.
    :param latent_dim: dimension D of ``z``.
    :param hidden: hidden layer sizes of the default MLP body.
    :param body: the encoder body ``(B, *data_shape) -> (B, F)`` (see :mod:`mixvae.networks`);
        default an MLP with ``hidden`` layers.  The guide owns its head, a linear map to
        ``(mu, sigma)``.
    """

    sites = (Site("z", "z_dist"),)
    story = "q(z|x) = N(mu(x), diag sigma(x)^2)"

    def __init__(
        self,
        data_shape: int | Sequence[int],
        latent_dim: int,
        hidden: Sequence[int] = (512, 512),
        *,
        body: nn.Module | None = None,
    ) -> None:
        super().__init__(data_shape, latent_dim)
        self.body = self.default_body(hidden) if body is None else body
        self.head = nn.Linear(self.body.out_features, 2 * latent_dim)
        to_pyro_module_(self)
        self._register_load_state_dict_pre_hook(legacy_mlp_keys)

    @classmethod
    def from_config(cls, config: TrainConfig, data_shape: tuple[int, ...], body: nn.Module) -> GaussianGuide:
        return cls(data_shape, config.latent_dim, body=body)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

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
