"""The Gaussian-mixture encoder, scored with its exact marginal density."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.util import broadcast_shape

from mixvae.guides.base import GUIDES, Guide
from mixvae.nn import mixture_variance, mlp, positive

if TYPE_CHECKING:
    from mixvae.config import TrainConfig


class UnivariateMixtureOfNormals(dist.TorchDistribution):
    r"""A mixture of univariate normals with a pathwise ``rsample``, event shape (1,).

    Pyro's :class:`~pyro.distributions.MixtureOfDiagNormals` refuses D = 1.
    In one dimension the implicit reparameterisation gradient is exact and
    simple (Figurnov et al. 2018): with :math:`F_\theta` the mixture CDF and
    :math:`f_\theta` its density, a draw :math:`z` has
    :math:`\partial z / \partial\theta = -\partial_\theta F_\theta(z) / f_\theta(z)`.

    :param locs: component means, shape ``batch + (K, 1)``.
    :param scales: component standard deviations, shape ``batch + (K, 1)``.
    :param component_logits: unnormalised log weights, shape ``batch + (K,)``.
    """

    arg_constraints = {
        "locs": constraints.real,
        "scales": constraints.positive,
        "component_logits": constraints.real,
    }
    support = constraints.independent(constraints.real, 1)
    has_rsample = True

    def __init__(
        self,
        locs: torch.Tensor,
        scales: torch.Tensor,
        component_logits: torch.Tensor,
        validate_args: bool | None = None,
    ) -> None:
        if locs.shape[-1] != 1:
            raise ValueError("UnivariateMixtureOfNormals is for D = 1; use MixtureOfDiagNormals")
        batch_shape = broadcast_shape(locs.shape[:-2], scales.shape[:-2], component_logits.shape[:-1])
        k = component_logits.shape[-1]
        self.locs = locs.expand(batch_shape + (k, 1))
        self.scales = scales.expand(batch_shape + (k, 1))
        self.component_logits = component_logits.expand(batch_shape + (k,))
        super().__init__(batch_shape, torch.Size((1,)), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        k = self.component_logits.shape[-1]
        return type(self)(
            self.locs.expand(batch_shape + (k, 1)),
            self.scales.expand(batch_shape + (k, 1)),
            self.component_logits.expand(batch_shape + (k,)),
        )

    def _components(self) -> torch.distributions.Normal:
        return torch.distributions.Normal(self.locs[..., 0], self.scales[..., 0])

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        log_w = self.component_logits.log_softmax(-1)
        return torch.logsumexp(log_w + self._components().log_prob(value), dim=-1)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        log_w = self.component_logits.log_softmax(-1)
        with torch.no_grad():
            k = torch.distributions.Categorical(logits=log_w).sample(sample_shape)
            loc = self.locs[..., 0].expand(shape + log_w.shape[-1:]).gather(-1, k[..., None])
            scale = self.scales[..., 0].expand(shape + log_w.shape[-1:]).gather(-1, k[..., None])
            z = (loc + scale * torch.randn_like(loc)).detach()  # shape + (1,)
        comps = self._components()
        cdf = (log_w.exp() * comps.cdf(z)).sum(-1, keepdim=True)
        density = self.log_prob(z).exp().unsqueeze(-1)
        # Value z, gradient -dF/dtheta / f at z.
        return z - (cdf - cdf.detach()) / density.detach()

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    @property
    def mean(self) -> torch.Tensor:
        return (self.component_logits.softmax(-1).unsqueeze(-1) * self.locs).sum(-2)

    @property
    def variance(self) -> torch.Tensor:
        return mixture_variance(self.component_logits.softmax(-1), self.locs, self.scales)


class MixtureOfDiagNormals(dist.MixtureOfDiagNormals):
    """Pyro's :class:`~pyro.distributions.MixtureOfDiagNormals`, plus its ``mean``, with
    ``sample_shape`` fixed for batched mixtures.

    Pyro 1.9's ``rsample(sample_shape)`` draws sample s from datapoint s's
    components when the mixture is batched (and fails when S exceeds the batch
    size); expanding to ``sample_shape + batch_shape`` first gives correct
    independent draws per datapoint.
    """

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        sample_shape = torch.Size(sample_shape)
        if sample_shape and self.batch_shape:
            return self.expand(sample_shape + self.batch_shape).rsample()
        if self.locs.dtype != torch.float64:
            # Pyro's pathwise gradient multiplies and divides component *densities*
            # (not log densities): in 40 dimensions with scales of 0.01 they reach
            # e^150, past float32's e^88, and the gradient turns NaN within a few
            # steps.  Drawing in float64 (range e^709) keeps it finite; only the
            # (batch, K, D) parameters are widened, the networks stay float32.
            wide = MixtureOfDiagNormals(
                self.locs.double(), self.coord_scale.double(), self.component_logits.double()
            )
            return wide.rsample(sample_shape).to(self.locs.dtype)
        return super().rsample(sample_shape)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    @property
    def mean(self) -> torch.Tensor:
        return (self.categorical.probs.unsqueeze(-1) * self.locs).sum(-2)

    @property
    def variance(self) -> torch.Tensor:
        return mixture_variance(self.categorical.probs, self.locs, self.coord_scale)


def diag_normal_mixture(
    locs: torch.Tensor, scales: torch.Tensor, logits: torch.Tensor
) -> dist.TorchDistribution:
    """The mixture sum_k softmax(logits)_k N(locs_k, diag scales_k^2) with pathwise ``rsample``.

    Shapes: ``locs``, ``scales`` (B, K, D), ``logits`` (B, K); event shape (D,).
    """
    if locs.shape[-1] == 1:
        return UnivariateMixtureOfNormals(locs, scales, logits)
    return MixtureOfDiagNormals(locs, scales, logits)


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

    :param data_dim: dimension P of ``x``.
    :param latent_dim: dimension D of ``z`` (D = 1 is supported).
    :param num_components: number K of encoder components, independent of the prior's.
    :param hidden: hidden layer sizes of the encoder MLP.
    """

    story = "q(z|x) = sum_k pi_k(x) N(mu_k(x), diag sigma_k(x)^2), exact log q(z|x)"

    def __init__(
        self,
        data_dim: int,
        latent_dim: int,
        num_components: int,
        hidden: Sequence[int] = (512, 512),
    ) -> None:
        super().__init__(data_dim, latent_dim)
        self._k = num_components
        # Output per component: D means, D raw scales, 1 logit.
        self.net = mlp([data_dim, *hidden, num_components * (2 * latent_dim + 1)])

    @classmethod
    def from_config(cls, config: TrainConfig, data_dim: int) -> MixtureGuide:
        k = config.guide_components or config.components
        return cls(data_dim, config.latent_dim, k, config.hidden)

    @property
    def num_components(self) -> int:
        return self._k

    def params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits (B, K), locs (B, K, D), scales (B, K, D))``."""
        d = self.latent_dim
        out = self.net(x).unflatten(-1, (self._k, 2 * d + 1))
        return out[..., 2 * d], out[..., :d], positive(out[..., d : 2 * d])

    def q_z(self, x: torch.Tensor) -> dist.TorchDistribution:
        logits, locs, scales = self.params(x)
        return diag_normal_mixture(locs, scales, logits)

    def diag_components(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.params(x)
