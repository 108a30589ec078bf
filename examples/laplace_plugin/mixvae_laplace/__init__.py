r"""An example mixvae plugin: a Laplace-mixture prior and a full-covariance Gaussian guide.

Each part declares its sites (:class:`mixvae.sites.Site`) and, the prior, its
own options; mixvae reads everything else (the Pyro programs, the exact
marginal, the component posterior, the direct ELBO) from those declarations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroParam
from pyro.nn.module import to_pyro_module_

from mixvae.guides import GUIDES, Guide
from mixvae.models import PRIORS, Prior
from mixvae.nn import positive
from mixvae.options import option
from mixvae.sites import Site


@PRIORS.register("laplace-mixture")
class LaplaceMixturePrior(Prior):
    r"""A mixture of K Laplace distributions, the component summed out exactly.

    .. math::

        y &\sim \mathrm{Categorical}(\pi) \\
        z_d \mid y &\sim \mathrm{Laplace}(\mu_{yd}, b_{yd})

    :param latent_dim: dimension D of ``z``.
    :param num_components: K.
    :param laplace_scale: the initial scale :math:`b` of every component.
    """

    sites = (Site("y", "y_dist", enumerated=True), Site("z", "z_dist"))
    story = "y ~ Cat(pi), z | y ~ Laplace(mu_y, b_y) per coordinate"

    @dataclass
    class Options:
        components: int = option(10, "number K of Laplace components", minimum=1)
        laplace_scale: float = option(1.0, "initial scale b of every Laplace component", positive=True)

    def __init__(self, latent_dim: int, num_components: int, laplace_scale: float = 1.0) -> None:
        super().__init__(latent_dim)
        self.logits = PyroParam(torch.zeros(num_components))
        self.locs = PyroParam(torch.randn(num_components, latent_dim))
        self.scales = PyroParam(
            torch.full((num_components, latent_dim), float(laplace_scale)), constraints.positive
        )

    @classmethod
    def from_config(cls, config, data_shape: tuple[int, ...], guide: torch.nn.Module) -> LaplaceMixturePrior:
        return cls(config.latent_dim, config.components, config.laplace_scale)

    @property
    def num_components(self) -> int:
        return self.logits.shape[-1]

    def y_dist(self, values: Mapping[str, torch.Tensor]) -> dist.TorchDistribution:
        return dist.Categorical(logits=self.logits)

    def z_dist(self, values: Mapping[str, torch.Tensor]) -> dist.TorchDistribution:
        y = values["y"]  # (K, 1) when enumerated, (B,) when observed or sampled
        return dist.Laplace(self.locs[y], self.scales[y]).to_event(1)


@GUIDES.register("fullcov-gaussian")
class FullCovGaussianGuide(Guide):
    r"""A Gaussian encoder with a full covariance.

    .. math::

        q(z \mid x) = \mathcal{N}(\mu(x), L(x) L(x)^\top)

    with :math:`L(x)` lower triangular, its diagonal positive (softplus).

    :param data_shape: shape of one ``x`` ((P,) or (C, H, W)).
    :param latent_dim: dimension D of ``z``.
    :param body: the encoder body, ``(B, *data_shape) -> (B, F)``: the configured network's
        (``--network mlp | conv``), or your own module.
    """

    sites = (Site("z", "z_dist"),)
    story = "q(z|x) = N(mu(x), L(x) L(x)^T), full covariance"

    def __init__(self, data_shape: tuple[int, ...], latent_dim: int, body: torch.nn.Module) -> None:
        super().__init__(data_shape, latent_dim)
        d = latent_dim
        self.body = body
        self.head = torch.nn.Linear(body.out_features, d + d * (d + 1) // 2)  # the guide's own head
        to_pyro_module_(self)
        self.register_buffer("_rows", torch.tril_indices(d, d)[0], persistent=False)
        self.register_buffer("_cols", torch.tril_indices(d, d)[1], persistent=False)

    @classmethod
    def from_config(cls, config, data_shape: tuple[int, ...], body: torch.nn.Module) -> FullCovGaussianGuide:
        return cls(data_shape, config.latent_dim, body)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def z_dist(self, h: torch.Tensor, values: Mapping[str, torch.Tensor]) -> dist.TorchDistribution:
        d = self.latent_dim
        loc, entries = h[..., :d], h[..., d:]
        tril = h.new_zeros(h.shape[:-1] + (d, d))
        tril[..., self._rows, self._cols] = entries
        diagonal = positive(tril.diagonal(dim1=-2, dim2=-1))
        tril = tril.tril(-1) + torch.diag_embed(diagonal)
        return dist.MultivariateNormal(loc, scale_tril=tril)
