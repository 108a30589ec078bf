"""The mixture distributions of mixvae, each with a goodness-of-fit and a gradient test.

* :class:`DiagNormalMixture`: a mixture of K diagonal Gaussians shared by a
  batch (the ``gmm`` prior's marginal, the VampPrior), scored with matrix products.
* :class:`MixtureOfDiagNormals`: Pyro's batched mixture with a pathwise
  ``rsample`` (the ``mixture`` guide's q(z|x)), with ``sample_shape`` fixed,
  and a JIT-traceable draw (:func:`pathwise_mixture_sample`) under ``torch.jit``.
* :class:`UnivariateMixtureOfNormals`: the same for D = 1, which Pyro refuses.
* :func:`diag_normal_mixture` picks between the last two.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.util import broadcast_shape


def mixture_variance(weights: torch.Tensor, locs: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Per-coordinate variance of sum_k w_k N(locs_k, diag scales_k^2) (law of total variance).

    Shapes: ``weights`` ``batch + (K,)``, ``locs`` and ``scales`` ``batch + (K, D)``.
    """
    w = weights.unsqueeze(-1)
    mean = (w * locs).sum(-2, keepdim=True)
    return (w * (scales**2 + (locs - mean) ** 2)).sum(-2)


class DiagNormalMixture(dist.TorchDistribution):
    r"""The mixture :math:`\sum_k w_k \mathcal{N}(\mu_k, \mathrm{diag}\,\sigma_k^2)` of K shared components.

    The same density as torch's ``MixtureSameFamily`` over ``Normal(...).to_event(1)``,
    computed with matrix products: :math:`\sum_d (z_d - \mu_{kd})^2 / \sigma_{kd}^2`
    expands into ``z**2 @ (1/sigma**2).T - 2 z @ (mu/sigma**2).T + const_k``, so
    N points against K components cost an (N, D) x (D, K) product instead of
    an (N, K, D) tensor.  That matters for the VampPrior (K = 500 pseudo-inputs,
    or 1,500 Gaussians with a 3-component mixture guide) in training and in
    importance sampling.  The products run in float64, so the expansion's
    cancellation costs no precision.

    :param log_weights: (K,) log mixture weights (normalised here).
    :param locs: (K, D) component means.
    :param scales: (K, D) component standard deviations.
    """

    arg_constraints = {
        "log_weights": constraints.real_vector,
        "locs": constraints.independent(constraints.real, 2),
        "scales": constraints.independent(constraints.positive, 2),
    }
    support = constraints.independent(constraints.real, 1)

    def __init__(
        self,
        log_weights: torch.Tensor,
        locs: torch.Tensor,
        scales: torch.Tensor,
        validate_args: bool | None = None,
    ) -> None:
        if locs.dim() != 2 or scales.shape != locs.shape or log_weights.shape != locs.shape[:1]:
            raise ValueError(
                "DiagNormalMixture takes log_weights (K,), locs (K, D) and scales (K, D); got "
                f"{tuple(log_weights.shape)}, {tuple(locs.shape)}, {tuple(scales.shape)}"
            )
        self.log_weights, self.locs, self.scales = log_weights.log_softmax(-1), locs, scales
        super().__init__(torch.Size(), locs.shape[-1:], validate_args=validate_args)

    def component_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log w_k + log N(value; mu_k, sigma_k^2) for every component k, shape ``value.shape[:-1] + (K,)``."""
        d = self.locs.shape[-1]
        if value.shape[-1:] != (d,):
            raise ValueError(
                f"DiagNormalMixture of dimension {d} cannot score values of shape {tuple(value.shape)}"
            )
        z = value.reshape(-1, d).double()
        prec = self.scales.double() ** -2  # (K, D)
        locs = self.locs.double()
        maha = (z**2) @ prec.T - 2 * z @ (locs * prec).T + (locs**2 * prec).sum(-1)  # (N, K)
        log_norm = -self.scales.double().log().sum(-1) - 0.5 * d * math.log(2 * math.pi)
        joint = self.log_weights.double() + log_norm - 0.5 * maha
        return joint.reshape(*value.shape[:-1], -1).to(value.dtype)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        # the log-sum-exp in float64 too, then back to the value's dtype
        return self.component_log_prob(value.double()).logsumexp(-1).to(value.dtype)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            k = dist.Categorical(logits=self.log_weights).sample(sample_shape)
            return self.locs[k] + self.scales[k] * torch.randn_like(self.locs[k])

    @property
    def mean(self) -> torch.Tensor:
        return (self.log_weights.exp().unsqueeze(-1) * self.locs).sum(-2)

    @property
    def variance(self) -> torch.Tensor:
        return mixture_variance(self.log_weights.exp(), self.locs, self.scales)


def pathwise_mixture_sample(
    locs: torch.Tensor,
    scales: torch.Tensor,
    logits: torch.Tensor,
    sample_shape: torch.Size = torch.Size(),
) -> torch.Tensor:
    r"""A draw of :math:`\sum_k \mathrm{softmax}(\text{logits})_k \mathcal{N}(\mu_k, \mathrm{diag}\,\sigma_k^2)`
    with pathwise gradients for every parameter, written in plain tensor operations.

    The value is an ordinary ancestral draw (a component, then a Gaussian).
    Its gradient is that of the Rosenblatt transform, the implicit
    reparameterisation of Graves (2016) and Figurnov et al. (2018): coordinate
    d has the conditional mixture CDF :math:`F_d(z_d \mid z_{<d})` (weights
    updated by the densities of :math:`z_{<d}`), the uniform
    :math:`u_d = F_d(z_d \mid z_{<d})` is held fixed, so
    :math:`\partial z_d / \partial\theta = -(\partial_\theta F_d + \sum_{d'<d}
    \partial_{z_{d'}} F_d\, \partial z_{d'} / \partial\theta) / f_d(z_d \mid z_{<d})`.
    The surrogate ``z_d - (F_d - stop(F_d)) / stop(f_d)``, built coordinate by
    coordinate on the surrogates before it, has exactly that gradient and
    the draw's value.  It is unbiased like Pyro's own
    :class:`~pyro.distributions.MixtureOfDiagNormals` gradient (another
    velocity field), and unlike Pyro's custom autograd function it can be
    traced by ``torch.jit`` (Pyro's JIT ELBOs).  Computed in float64.

    Shapes: ``locs``, ``scales`` ``batch + (K, D)``, ``logits`` ``batch + (K,)``;
    returns ``sample_shape + batch + (D,)``.
    """
    dtype = locs.dtype
    locs, scales, logits = locs.double(), scales.double(), logits.double()
    batch = broadcast_shape(locs.shape[:-2], scales.shape[:-2], logits.shape[:-1])
    k, d = logits.shape[-1], locs.shape[-1]
    shape = torch.Size(sample_shape) + batch
    log_w = logits.log_softmax(-1).expand(shape + (k,))
    locs, scales = locs.expand(shape + (k, d)), scales.expand(shape + (k, d))
    with torch.no_grad():
        pick = torch.distributions.Categorical(logits=log_w).sample()[..., None, None].expand(shape + (1, d))
        chosen_loc, chosen_scale = locs.gather(-2, pick)[..., 0, :], scales.gather(-2, pick)[..., 0, :]
        value = chosen_loc + chosen_scale * torch.randn_like(chosen_loc)  # shape + (D,)
    coords = []
    log_r = log_w  # log weights of the components given the coordinates so far
    for i in range(d):
        normal = torch.distributions.Normal(locs[..., i], scales[..., i])  # shape + (K,)
        v = value[..., i : i + 1]
        weights = log_r.softmax(-1)
        cdf = (weights * normal.cdf(v)).sum(-1)
        density = (weights * normal.log_prob(v).exp()).sum(-1).detach().clamp_min(1e-300)
        z = value[..., i] - (cdf - cdf.detach()) / density
        coords.append(z)
        log_r = log_r + normal.log_prob(z.unsqueeze(-1))
    return torch.stack(coords, -1).to(dtype)


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
        if torch.jit.is_tracing():
            # Pyro's custom autograd function cannot be traced (JitTraceEnum_ELBO fails with
            # "unordered_map::at"); the same distribution's pathwise draw in plain operations can
            return pathwise_mixture_sample(self.locs, self.coord_scale, self.component_logits, sample_shape)
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


def distribution_mean(q: torch.distributions.Distribution, num_samples: int = 256) -> torch.Tensor:
    """``q.mean`` where the distribution has a closed form, else the mean of ``num_samples`` draws.

    A normalizing-flow q(z|x) (a ``TransformedDistribution``) has no closed-form
    mean; figures, warm starts and evaluation then use the sample mean.
    """
    try:
        return q.mean
    except NotImplementedError:
        with torch.no_grad():
            return q.sample(torch.Size([num_samples])).mean(0)


def distribution_variance(q: torch.distributions.Distribution, num_samples: int = 256) -> torch.Tensor:
    """``q.variance`` where the distribution has a closed form, else the variance of draws."""
    try:
        return q.variance
    except NotImplementedError:
        with torch.no_grad():
            return q.sample(torch.Size([num_samples])).var(0)
