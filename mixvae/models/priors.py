"""Priors over the latent code ``z`` (and, for mixtures, the component ``y``).

A prior declares its latent sites once (:attr:`Prior.sites`, see
:mod:`mixvae.sites`); its Pyro program, its exact marginal log-density, its
component posterior and its samples are all read from that declaration.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam

from mixvae import sites as _sites
from mixvae.distributions import DiagNormalMixture
from mixvae.errors import ConfigError
from mixvae.options import NoOptions, components_option, option
from mixvae.registry import Registry
from mixvae.sites import Site

if TYPE_CHECKING:
    from mixvae.config import TrainConfig

PRIORS: Registry[type[Prior]] = Registry("prior")


class Prior(PyroModule):
    """Base class of the priors.

    A prior declares its latent sample sites in :attr:`sites`, each with the
    method returning its distribution given the earlier sites; the last one is
    ``z``.  Everything else has a default read from that declaration:

    * :meth:`forward`, the Pyro program: each site in order inside the model's
      ``pyro.plate("data", ...)``, an enumerated site marked
      ``infer={"enumerate": "parallel"}`` (or observed, for labelled points);
    * :meth:`log_prob`, the exact log-density of the continuous latents with
      the enumerated site summed out, and :meth:`component_log_posterior`;
    * :meth:`sample_z`, ancestral sampling.

    Subclasses may override these for speed (the GMM prior scores its marginal
    with matrix products); tests check each such override against the
    declaration.  Overriding :meth:`forward` makes the Pyro program the
    subclass's own: the direct ELBO then falls back to Pyro's.

    Capabilities (declared, with defaults here): :attr:`num_components` (a
    mixture with K components when > 0), :attr:`fits_codes` (can be fitted to
    encoder codes by :meth:`fit_to_codes`, the warm start),
    :attr:`fits_posthoc_gmm` (a GMM is fitted to the aggregate posterior after
    training) and :attr:`has_mixing_weights` (``--mixture-weights`` applies).

    :param latent_dim: dimension D of ``z``.
    """

    #: the latent sample sites, in the order of the generative story
    sites: ClassVar[tuple[Site, ...]] = ()
    #: the prior's own options (a dataclass of :func:`mixvae.options.option` fields)
    Options: ClassVar[type] = NoOptions
    #: one-line generative story, shown by ``mixvae list``
    story: ClassVar[str] = ""
    name: ClassVar[str] = ""
    #: can be set to a Gaussian mixture fitted to encoder codes (:meth:`fit_to_codes`)
    fits_codes: ClassVar[bool] = False
    #: after training, a GMM fitted to the aggregate posterior becomes p(z) (the prior's ``set_gmm``)
    fits_posthoc_gmm: ClassVar[bool] = False
    #: has mixing weights that ``--mixture-weights uniform`` can fix at 1/K
    has_mixing_weights: ClassVar[bool] = False
    # derived from ``sites`` (read-only views kept for code written against mixvae 0.1)
    latent_sites: ClassVar[tuple[str, ...]] = ()
    enumerated_sites: ClassVar[tuple[str, ...]] = ()
    discrete_site: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "sites" in vars(cls):
            _sites.check_declaration(f"prior {cls.__name__}", cls.sites)
            cls.latent_sites = _sites.names(cls.sites)
            cls.enumerated_sites = _sites.enumerated_names(cls.sites)
            cls.discrete_site = cls.enumerated_sites[0] if cls.enumerated_sites else None

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    @classmethod
    def from_config(cls, config: TrainConfig, data_shape: tuple[int, ...], guide: torch.nn.Module) -> Prior:
        """Build the prior a training configuration asks for.

        ``guide`` is handed over for priors built on the encoder (VampPrior).
        """
        return cls(config.latent_dim)

    @property
    def num_components(self) -> int:
        """Number of values of the discrete site (0 when there is none)."""
        return 0

    def site_dist(self, site: Site, values: Mapping[str, torch.Tensor]) -> dist.TorchDistribution:
        """The distribution of ``site`` given the values of the sites before it."""
        return getattr(self, site.dist)(values)

    def forward(self, component: torch.Tensor | None = None) -> torch.Tensor:
        """Declare the prior's sites inside the data plate and return z.

        :param component: observed values of the discrete site (semi-supervised
            labels), shape (B,); ``None`` enumerates it.  Priors without one ignore it.
        """
        return self.declare_sites(component)["z"]

    def declare_sites(self, component: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The Pyro sample statements of :attr:`sites`, in order; returns every site's value.

        A subclass that adds statements to its program (an auxiliary factor) calls
        this from its own :meth:`forward`.
        """
        values: dict[str, torch.Tensor] = {}
        for site in self.sites:
            fn = self.site_dist(site, values)
            if not site.enumerated:
                values[site.name] = pyro.sample(site.name, fn)
            elif component is None:
                values[site.name] = pyro.sample(site.name, fn, infer={"enumerate": "parallel"})
            else:
                values[site.name] = pyro.sample(site.name, fn, obs=component)
        return values

    def initialise_from_data(self, x: torch.Tensor, generator: torch.Generator) -> None:
        """Data-dependent initialisation, called once by ``train`` before the first step.

        The default does nothing; the VampPrior with ``pseudo_init="data"``
        copies training images into its pseudo-inputs.

        :param x: the training data, (N, P), as loaded (grey levels, before any binarisation).
        :param generator: the random stream to draw from (not the global one).
        """

    def _mixture_parts(self) -> tuple[dist.Categorical, dist.TorchDistribution] | None:
        # For a declaration "y ~ Categorical, z | y ~ p(z | y)" (nothing else): p(y) and
        # p(z | y) for every y at once (batch (K,)), from the declared methods themselves.
        if len(self.sites) != 2 or not self.sites[0].enumerated or self.sites[1].name != "z":
            return None
        y_site, z_site = self.sites
        p_y = self.site_dist(y_site, {})
        if not isinstance(p_y, torch.distributions.Categorical) or p_y.batch_shape != torch.Size():
            return None
        support = p_y.enumerate_support(expand=False)  # (K,)
        p_z = self.site_dist(z_site, {y_site.name: support})
        return (p_y, p_z) if p_z.batch_shape == support.shape else None

    def _diagonal_mixture(self) -> DiagNormalMixture | None:
        # The marginal as matrix products when the components the declaration returns
        # are diagonal Gaussians: the same numbers as torch's MixtureSameFamily without
        # its (N, K, D) tensor (K = 500, D = 40: 14x faster on 10,000 points).
        parts = self._mixture_parts()
        if parts is None:
            return None
        p_y, p_z = parts
        base = getattr(p_z, "base_dist", None)
        if (
            isinstance(p_z, torch.distributions.Independent)
            and p_z.reinterpreted_batch_ndims == 1
            and type(base) in (torch.distributions.Normal, dist.Normal)
        ):
            return DiagNormalMixture(p_y.logits, base.loc, base.scale)
        return None

    def marginal(self) -> dist.TorchDistribution:
        """p(z) with every discrete component summed out, event shape (D,).

        Read from the declaration: the distribution of a prior whose only site is
        ``z``, or the mixture sum_y p(y) p(z | y) of one declaring ``y`` then ``z``.
        Priors with other latent sites (``w`` of ``dilokthanakul``) have no
        closed-form marginal; use :meth:`log_prob` and :meth:`sample_z`.
        """
        if _sites.names(self.sites) == ("z",):
            return self.site_dist(self.sites[0], {})
        diagonal = self._diagonal_mixture()
        if diagonal is not None:
            return diagonal
        parts = self._mixture_parts()
        if parts is not None:
            return dist.MixtureSameFamily(*parts)
        raise NotImplementedError(f"prior {self.name!r} has no closed-form marginal p(z)")

    def log_prob(self, latents: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """log p of the continuous latents (``{"z": ...}``, plus ``"w"`` where the prior
        has it), every discrete site summed out; shape: their batch shape."""
        diagonal = self._diagonal_mixture()
        if diagonal is not None:
            return diagonal.log_prob(latents["z"])
        return _sites.summed_log_density(self.sites, self.site_dist, latents)

    def component_log_posterior(self, latents: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """log p(component | continuous latents), shape ``batch + (K,)``; only for mixture priors."""
        if self.discrete_site is None:
            raise NotImplementedError(f"prior {self.name!r} has no discrete component")
        diagonal = self._diagonal_mixture()
        if diagonal is not None:
            return diagonal.component_log_prob(latents["z"]).log_softmax(-1)
        _, inside = _sites.log_density(self.sites, self.site_dist, latents)
        assert inside is not None
        return inside.log_softmax(0).movedim(0, -1)

    @contextmanager
    def as_trained(self) -> Iterator[Prior]:
        """A block in which the prior is the one it was trained as.

        The same prior for every built-in one except ``posthoc-gmm``, whose p(z)
        becomes a GMM fitted to q(z) after training; evaluation reports the
        numbers of both.
        """
        yield self

    def sample_z(self, n: int, component: int | None = None) -> torch.Tensor:
        """``n`` draws of z from the prior, or given one mixture component; shape (n, D)."""
        fixed = {}
        if component is not None:
            if self.discrete_site is None:
                raise NotImplementedError(f"prior {self.name!r} has no discrete component")
            fixed[self.discrete_site] = component
        with torch.no_grad():
            return _sites.sample_ancestral(self.sites, self.site_dist, n, fixed)["z"]

    def fit_to_codes(
        self,
        codes: torch.Tensor,
        *,
        code_variances: torch.Tensor | None = None,
        seed: int = 0,
        n_init: int = 1,
    ) -> object:
        """Set the prior to a density fitted to encoder codes (the warm start); see :attr:`fits_codes`."""
        raise ConfigError(
            f"prior {self.name!r} cannot be fitted to encoder codes; use a prior that declares fits_codes "
            "(gmm, gmm-full) with --init-from"
        )


@PRIORS.register("standard")
class StandardPrior(Prior):
    r"""The classic VAE prior.

    .. math::

        z \sim \mathcal{N}(0, I_D)
    """

    sites = (Site("z", "z_dist"),)
    story = "z ~ N(0, I)"

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        self.register_buffer("_zeros", torch.zeros(latent_dim))

    def z_dist(self, values: Mapping[str, torch.Tensor]) -> dist.TorchDistribution:
        return dist.Normal(self._zeros, 1.0).to_event(1)


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
