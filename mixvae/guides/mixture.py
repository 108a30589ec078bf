"""The Gaussian-mixture encoder, scored with its exact marginal density."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyro.distributions as dist
import torch
from pyro.nn.module import to_pyro_module_
from torch import nn

from mixvae.distributions import diag_normal_mixture
from mixvae.guides.base import GUIDES, Guide, legacy_mlp_keys
from mixvae.nn import positive
from mixvae.options import components_option, option
from mixvae.sites import Site

if TYPE_CHECKING:
    from mixvae.config import TrainConfig


@GUIDES.register("mixture")
class MixtureGuide(Guide):
    r"""An encoder whose output is a K-component Gaussian mixture.

    .. math::

        q(z \mid x) = \sum_{k=1}^{K} \pi_k(x)\,
            \mathcal{N}(\mu_k(x), \mathrm{diag}\,\sigma_k(x)^2)

    The ELBO is scored with the exact marginal :math:`\log q(z \mid x)`
    (a log-sum-exp over components) and reparameterised pathwise
    (:class:`~pyro.distributions.MixtureOfDiagNormals`).  No component index is
    sampled or enumerated in the guide: an index that existed only in the guide
    would inflate the bound by up to :math:`\log K`.

    :param data_shape: shape of one ``x``: ``(P,)`` (or an int P) or ``(C, H, W)``.
    :param latent_dim: dimension D of ``z`` (D = 1 is supported).
    :param num_components: number K of encoder components, independent of the prior's.
    :param hidden: hidden layer sizes of the default MLP body.
    :param body: the encoder body (see :mod:`mixvae.networks`); the guide owns its head, a
        linear map to K (means, scales, logit).
    """

    sites = (Site("z", "z_dist"),)

    @dataclass
    class Options:
        components: int = components_option()
        guide_components: int | None = option(
            None, "components of the mixture guide (default: --components)", minimum=1
        )

    story = "q(z|x) = sum_k pi_k(x) N(mu_k(x), diag sigma_k(x)^2), exact log q(z|x)"

    def __init__(
        self,
        data_shape: int | Sequence[int],
        latent_dim: int,
        num_components: int,
        hidden: Sequence[int] = (512, 512),
        *,
        body: nn.Module | None = None,
    ) -> None:
        super().__init__(data_shape, latent_dim)
        self._k = num_components
        self.body = self.default_body(hidden) if body is None else body
        # Output per component: D means, D raw scales, 1 logit.
        self.head = nn.Linear(self.body.out_features, num_components * (2 * latent_dim + 1))
        to_pyro_module_(self)
        self._register_load_state_dict_pre_hook(legacy_mlp_keys)

    @classmethod
    def from_config(cls, config: TrainConfig, data_shape: tuple[int, ...], body: nn.Module) -> MixtureGuide:
        k = config.guide_components or config.components
        return cls(data_shape, config.latent_dim, k, body=body)

    @property
    def num_components(self) -> int:
        return self._k

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def _split(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        d = self.latent_dim
        out = h.unflatten(-1, (self._k, 2 * d + 1))
        return out[..., 2 * d], out[..., :d], positive(out[..., d : 2 * d])

    def params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits (B, K), locs (B, K, D), scales (B, K, D))``."""
        return self._split(self.encode(x))

    def z_dist(self, h: torch.Tensor, values: Mapping[str, torch.Tensor]) -> dist.TorchDistribution:
        logits, locs, scales = self._split(h)
        return diag_normal_mixture(locs, scales, logits)

    def diag_components(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.params(x)
