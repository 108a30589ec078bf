"""Priors over the latent code ``z`` (and, for mixtures, the component ``y``).

A prior declares its latent sites once (:attr:`Prior.sites`, see
:mod:`mixvae.sites`); its Pyro program, its exact marginal log-density, its
component posterior and its samples are all read from that declaration.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, ClassVar

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule

from mixvae import sites as _sites
from mixvae.distributions import DiagNormalMixture
from mixvae.errors import ConfigError
from mixvae.options import NoOptions
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
