"""The GMVAE of Dilokthanakul et al. (2016): a mixture whose components are networks of w."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex

from mixvae.models.priors import PRIORS, Prior
from mixvae.nn import mlp, positive
from mixvae.options import components_option, option
from mixvae.sites import Site

if TYPE_CHECKING:
    from mixvae.config import TrainConfig


@PRIORS.register("dilokthanakul")
class DilokthanakulPrior(Prior):
    r"""The GMVAE of Dilokthanakul et al. (2016, arXiv:1611.02648).

    .. math::

        w &\sim \mathcal{N}(0, I_W) \\
        c &\sim \mathrm{Categorical}(1/K) \\
        z \mid w, c &\sim \mathcal{N}(\mu_c(w), \mathrm{diag}\,\sigma_c(w)^2)

    One network with K heads maps ``w`` to the component means and scales.
    ``c`` is enumerated in the model, so the paper's "z-prior" term
    :math:`-\mathrm{KL}(p(c \mid w, z) \,\|\, p(c))` is contained exactly in
    :math:`\log p(z \mid w) = \log \sum_c p(c)\, p(z \mid w, c)`.  The guide
    must provide ``w`` and ``z`` (the ``dilokthanakul`` guide).

    :param latent_dim: dimension D of ``z``.
    :param num_components: K.
    :param w_dim: dimension W of ``w``.
    :param hidden: hidden layers (tanh) of the network from ``w``.
    :param zprior_threshold: the paper's minimum-information constraint
        :math:`\lambda` (nats per datapoint): the z-prior KL term gets gradient
        only while it exceeds :math:`\lambda`.  ``None`` switches it off.
    """

    sites = (Site("w", "w_dist"), Site("c", "c_dist", enumerated=True), Site("z", "z_dist"))

    @dataclass
    class Options:
        components: int = components_option()
        w_dim: int | None = option(None, "dimension of w (default: --latent-dim)", minimum=1)
        zprior_threshold: float | None = option(
            None, "z-prior free bits: KL(p(c|w,z) || p(c)) gets gradient only above this (nats)", minimum=0
        )
        w_hidden: int = option(
            128,
            "width of the tanh layer of the dilokthanakul prior's network from w to the components' "
            "means and scales (the authors' code: 500, the --hidden of their other networks)",
            minimum=1,
        )

    story = "w ~ N(0, I), c ~ Cat(1/K), z | w,c ~ N(mu_c(w), diag sigma_c(w)^2)"

    def __init__(
        self,
        latent_dim: int,
        num_components: int,
        w_dim: int,
        hidden: Sequence[int] = (128,),
        zprior_threshold: float | None = None,
    ) -> None:
        super().__init__(latent_dim)
        self.w_dim = w_dim
        self._k = num_components
        self.zprior_threshold = zprior_threshold
        self.net = mlp([w_dim, *hidden, num_components * 2 * latent_dim], activation=torch.nn.Tanh)
        self.register_buffer("_zeros_w", torch.zeros(w_dim))
        self.register_buffer("_logits", torch.zeros(num_components))

    @classmethod
    def from_config(
        cls, config: TrainConfig, data_shape: tuple[int, ...], guide: torch.nn.Module
    ) -> DilokthanakulPrior:
        w_dim = config.w_dim or config.latent_dim
        return cls(
            config.latent_dim,
            config.components,
            w_dim,
            hidden=(config.w_hidden,),
            zprior_threshold=config.zprior_threshold,
        )

    @property
    def num_components(self) -> int:
        return self._k

    def w_dist(self, values: Mapping[str, torch.Tensor]) -> dist.TorchDistribution:
        return dist.Normal(self._zeros_w, 1.0).to_event(1)

    def c_dist(self, values: Mapping[str, torch.Tensor]) -> dist.TorchDistribution:
        return dist.Categorical(logits=self._logits)

    def component_params(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Means and scales of p(z | w, c) for every c, each of shape ``w.shape[:-1] + (K, D)``."""
        out = self.net(w).unflatten(-1, (self._k, 2, self.latent_dim))
        return out[..., 0, :], positive(out[..., 1, :])

    def z_dist(self, values: Mapping[str, torch.Tensor]) -> dist.TorchDistribution:
        locs, scales = self.component_params(values["w"])
        c = values["c"]
        # Vindex broadcasts c ((K, 1) under enumeration, or (B,)) against the batch of w.
        return dist.Normal(Vindex(locs)[..., c, :], Vindex(scales)[..., c, :]).to_event(1)

    def forward(self, component: torch.Tensor | None = None) -> torch.Tensor:
        # The declared sites, plus the paper's free-bits clamp as an auxiliary factor
        # (so the Pyro program is this class's own: training uses Pyro's ELBO).
        values = self.declare_sites(component)
        z = values["z"]
        if self.zprior_threshold is not None:
            # log p(z|w) = E_r[log p(z|w,c)] - KL(r || p(c)) with r = p(c|w,z); adding
            # min(0, KL - lambda) replaces -KL by the constant -lambda while KL < lambda.
            locs, scales = self.component_params(values["w"])
            prior_c = self._logits.log_softmax(-1)
            r = (prior_c + dist.Normal(locs, scales).log_prob(z.unsqueeze(-2)).sum(-1)).log_softmax(-1)
            kl = (r.exp() * (r - prior_c)).sum(-1)
            clamp = dist.Unit((kl - self.zprior_threshold).clamp(max=0.0))
            pyro.sample(
                "zprior_clamp", clamp, obs=clamp.sample(), infer={"is_auxiliary": True, "kl_term": True}
            )
        return z
