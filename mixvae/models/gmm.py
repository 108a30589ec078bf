"""Gaussian-mixture priors: diagonal (``gmm``) and full-covariance (``gmm-full``) components,
the component ``y`` summed out exactly by enumeration, and their fit to a trained encoder's codes
(the warm start)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroParam

from mixvae.errors import ConfigError
from mixvae.models.priors import PRIORS, Prior
from mixvae.options import components_option, option
from mixvae.sites import Site

if TYPE_CHECKING:
    from mixvae.config import TrainConfig


@PRIORS.register("gmm")
class GMMPrior(Prior):
    r"""A learned Gaussian-mixture prior with the component summed out exactly.

    .. math::

        y &\sim \mathrm{Categorical}(\pi) \\
        z \mid y &\sim \mathcal{N}(\mu_y, \mathrm{diag}\,\sigma_y^2)

    :math:`\pi` (through logits), :math:`\mu` and :math:`\sigma` (through a
    positive transform) are learned; with ``learn_weights=False``
    (``--mixture-weights uniform``) :math:`\pi` stays uniform, :math:`1/K`,
    as in Rui Shu's GMVAE and Dilokthanakul et al.  On balanced data that is
    the true class prior, and it keeps one component from growing over its
    neighbours' points (a learned :math:`\pi` lets a big cluster keep a
    share of a smaller one's).  ``y`` is marked for parallel
    enumeration, so a guide that does not provide ``y`` gets it summed out by
    :class:`~pyro.infer.TraceEnum_ELBO`; a guide that provides ``y`` (the
    ``categorical`` guide) replaces it.

    Its marginal and component posterior are read from the declaration, with
    :class:`~mixvae.distributions.DiagNormalMixture`'s matrix products for
    diagonal components (see :meth:`Prior.marginal`).

    :param latent_dim: dimension D of ``z``.
    :param num_components: number K of mixture components.
    :param init_spread: standard deviation of the random initial means.
    :param learn_weights: learn :math:`\pi`; if False it is fixed at uniform.
    """

    sites = (Site("y", "y_dist", enumerated=True), Site("z", "z_dist"))
    story = "y ~ Cat(pi), z | y ~ N(mu_y, diag sigma_y^2)"

    @dataclass
    class Options:
        components: int = components_option()
        mixture_weights: str = option(
            "learned",
            "mixing weights pi: learned | uniform (fixed at 1/K, as in Rui Shu's GMVAE; with --init-from "
            "the fitted GMM's means and covariances are copied, not its weights)",
            choices=("learned", "uniform"),
            exclusive=True,
        )
        init_spread: float = option(
            1.0,
            "standard deviation of the random initial component means of a gmm prior (Rui Shu's GMVAE "
            "starts them near 0, about 0.16: the components begin alike and part as the clusters form)",
            positive=True,
            exclusive=True,
        )

    fits_codes = True
    has_mixing_weights = True
    #: the components' covariance: ``"diag"`` (scales, (K, D)) or ``"full"`` (Cholesky factors, (K, D, D))
    covariance_type: ClassVar[str] = "diag"

    def __init__(
        self, latent_dim: int, num_components: int, init_spread: float = 1.0, learn_weights: bool = True
    ) -> None:
        super().__init__(latent_dim)
        self.learn_weights = learn_weights
        if learn_weights:
            self.logits = PyroParam(torch.zeros(num_components))
        else:
            self.register_buffer("logits", torch.zeros(num_components))
        self.locs = PyroParam(init_spread * torch.randn(num_components, latent_dim))
        if self.covariance_type == "diag":
            self.scales = PyroParam(torch.ones(num_components, latent_dim), constraints.positive)
        else:
            eye = torch.eye(latent_dim).expand(num_components, latent_dim, latent_dim).clone()
            self.scale_tril = PyroParam(eye, constraints.lower_cholesky)

    @classmethod
    def from_config(
        cls, config: TrainConfig, data_shape: tuple[int, ...], guide: torch.nn.Module
    ) -> GMMPrior:
        return cls(
            config.latent_dim,
            config.components,
            init_spread=config.init_spread,
            learn_weights=config.mixture_weights == "learned",
        )

    @property
    def num_components(self) -> int:
        return self.logits.shape[-1]

    @property
    def component_scales(self) -> torch.Tensor:
        """The components' scale parameters, shape (K, D) (diagonal) or (K, D, D) (Cholesky factors)."""
        return self.scales if self.covariance_type == "diag" else self.scale_tril

    def _gaussian(self, loc: torch.Tensor, scale: torch.Tensor) -> dist.TorchDistribution:
        if self.covariance_type == "diag":
            return dist.Normal(loc, scale).to_event(1)
        return dist.MultivariateNormal(loc, scale_tril=scale)

    def y_dist(self, values: Mapping[str, torch.Tensor]) -> dist.TorchDistribution:
        return dist.Categorical(logits=self.logits)

    def z_dist(self, values: Mapping[str, torch.Tensor]) -> dist.TorchDistribution:
        # Plain indexing broadcasts from the right: y of shape (K, 1) under
        # enumeration gives (K, 1, D); y of shape (B,) gives (B, D).
        y = values["y"]
        return self._gaussian(self.locs[y], self.component_scales[y])

    def component_distribution(self, k: int) -> dist.TorchDistribution:
        """p(z | y = k)."""
        return self._gaussian(self.locs[k], self.component_scales[k])

    @torch.no_grad()
    def set_mixture(self, weights: np.ndarray | None, means: np.ndarray, covariances: np.ndarray) -> None:
        """Set the components to ``means`` (K, D) and ``covariances`` ((K, D) variances for
        ``diag``, (K, D, D) matrices for ``full``); the weights (K,) too, unless they are fixed."""

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(a, dtype=self.locs.dtype, device=self.locs.device)

        if weights is not None and self.learn_weights:  # a prior with fixed uniform weights keeps them
            self.logits = t(np.log(weights))
        self.locs = t(means)
        if self.covariance_type == "diag":
            self.scales = t(np.sqrt(covariances))
        else:
            self.scale_tril = t(np.linalg.cholesky(covariances))

    @torch.no_grad()
    def fit_to_codes(
        self,
        codes: torch.Tensor,
        *,
        code_variances: torch.Tensor | None = None,
        seed: int = 0,
        n_init: int = 1,
    ) -> object:
        """Set the prior to the maximum-likelihood mixture of ``codes`` (scikit-learn's
        :class:`~sklearn.mixture.GaussianMixture` with this prior's K and covariance type).

        :param codes: (N, D) latent codes, e.g. encoder means of the training data.
        :param code_variances: (N, D) variances of q(z|x) around those means; when
            given, each component's covariance gains the responsibility-weighted
            mean of them, so that component k matches the first two moments of
            its share of the aggregate posterior, sum_n r_nk q(z|x_n), and not only
            of the means (which have almost no spread along inactive units).
        :returns: the fitted scikit-learn mixture.
        """
        from sklearn.mixture import GaussianMixture

        z = codes.detach().cpu().double().numpy()
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ConfigError(
                f"codes of shape {tuple(z.shape)} do not match the prior's latent dim {self.latent_dim}"
            )
        if len(z) < self.num_components:
            raise ConfigError(
                f"{len(z)} codes cannot be fitted with {self.num_components} components; use more data"
            )
        if not np.isfinite(z).all():
            raise ConfigError("the encoder gave non-finite codes; the run to start from has diverged")
        gmm = GaussianMixture(
            self.num_components,
            covariance_type=self.covariance_type,
            random_state=seed,
            n_init=n_init,
            reg_covar=1e-5,
        ).fit(z)
        cov = gmm.covariances_.copy()
        if code_variances is not None:
            resp = gmm.predict_proba(z)  # (N, K)
            mass = resp.sum(0)[:, None] + 10 * np.finfo(resp.dtype).eps  # as scikit-learn guards empty ones
            extra = resp.T @ code_variances.detach().cpu().double().numpy() / mass  # (K, D)
            cov += extra[:, :, None] * np.eye(z.shape[1]) if self.covariance_type == "full" else extra
        self.set_mixture(gmm.weights_, gmm.means_, cov)
        return gmm


@PRIORS.register("gmm-full")
class FullCovGMMPrior(GMMPrior):
    r"""A learned Gaussian-mixture prior with full-covariance components.

    .. math::

        y &\sim \mathrm{Categorical}(\pi) \\
        z \mid y &\sim \mathcal{N}(\mu_y, L_y L_y^\top)

    As :class:`GMMPrior` (``y`` enumerated, or given by a ``categorical``
    guide), with a learned lower-triangular Cholesky factor :math:`L_y` per
    component instead of a diagonal scale.  Clusters of a trained encoder are
    rarely axis-aligned: a full-covariance GMM fitted to a standard VAE's
    codes separates MNIST digits far better than a diagonal one, and this
    prior can start from such a fit (``--init-from``, :meth:`GMMPrior.fit_to_codes`).
    """

    story = "y ~ Cat(pi), z | y ~ N(mu_y, L_y L_y^T) (full covariance)"
    covariance_type = "full"
