"""Priors over the latent code ``z`` (and, for mixtures, the component ``y``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam
from pyro.ops.indexing import Vindex

from mixvae.distributions import DiagNormalMixture
from mixvae.errors import ConfigError
from mixvae.nn import mlp, positive
from mixvae.registry import Registry

if TYPE_CHECKING:
    from mixvae.config import TrainConfig

PRIORS: Registry[type[Prior]] = Registry("prior")


class Prior(PyroModule):
    """Base class of the priors.

    A prior declares its latent sample sites when called inside the model's
    ``pyro.plate("data", ...)`` and returns ``z``.  It also exposes the exact
    marginal density of ``z`` (discrete components summed out) as a torch
    distribution, for evaluation and sampling.

    :param latent_dim: dimension D of ``z``.
    """

    #: the latent sample sites the prior declares
    latent_sites: tuple[str, ...] = ("z",)
    #: latent sites the model sums out by enumeration (a guide need not provide them)
    enumerated_sites: tuple[str, ...] = ()
    #: the discrete component site used for clustering, or ``None``
    discrete_site: str | None = None
    #: one-line generative story, shown by ``mixvae list``
    story: str = ""
    name: str = ""
    #: whether ``forward`` declares only ``z ~ marginal()``, or ``y ~ y_dist()`` then
    #: ``z ~ z_dist(y)`` (a Gaussian mixture), so that the trainer may compute the ELBO
    #: from these distributions without Pyro's tracing
    #: (:func:`~mixvae.inference.objectives.direct_loss`); a subclass that declares
    #: other sites must leave it ``False``
    direct_elbo: bool = False

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    @classmethod
    def from_config(cls, config: TrainConfig, data_dim: int, guide: torch.nn.Module) -> Prior:
        """Build the prior a training configuration asks for.

        ``guide`` is handed over for priors built on the encoder (VampPrior).
        """
        return cls(config.latent_dim)

    @property
    def num_components(self) -> int:
        """Number of values of the discrete site (0 when there is none)."""
        return 0

    def forward(self, component: torch.Tensor | None = None) -> torch.Tensor:
        """Declare the prior's sites inside the data plate and return z.

        :param component: observed values of the discrete site (semi-supervised
            labels), shape (B,); ``None`` enumerates it.  Priors without one ignore it.
        """
        raise NotImplementedError

    def initialise_from_data(self, x: torch.Tensor, generator: torch.Generator) -> None:
        """Data-dependent initialisation, called once by ``train`` before the first step.

        The default does nothing; the VampPrior with ``pseudo_init="data"``
        copies training images into its pseudo-inputs.

        :param x: the training data, (N, P), as loaded (grey levels, before any binarisation).
        :param generator: the random stream to draw from (not the global one).
        """

    def _component_site(
        self, name: str, fn: dist.TorchDistribution, component: torch.Tensor | None
    ) -> torch.Tensor:
        if component is None:
            return pyro.sample(name, fn, infer={"enumerate": "parallel"})
        return pyro.sample(name, fn, obs=component)

    def marginal(self) -> dist.TorchDistribution:
        """p(z) with every discrete component summed out, event shape (D,).

        Priors with latent sites besides ``z`` (``w`` of ``dilokthanakul``) have
        no closed-form marginal; use :meth:`log_prob` and :meth:`sample_z`.
        """
        raise NotImplementedError(f"prior {self.name!r} has no closed-form marginal p(z)")

    def log_prob(self, latents: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """log p of the continuous latents (``{"z": ...}``, plus ``"w"`` where the prior
        has it), every discrete site summed out; shape: their batch shape."""
        return self.marginal().log_prob(latents["z"])

    def sample_z(self, n: int, component: int | None = None) -> torch.Tensor:
        """``n`` draws of z from the prior, or from one mixture component; shape (n, D)."""
        p = self.marginal() if component is None else self.component_distribution(component)
        return p.sample((n,))

    def component_log_posterior(self, latents: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """log p(component | continuous latents), shape ``batch + (K,)``; only for mixture priors."""
        raise NotImplementedError(f"prior {self.name!r} has no discrete component")

    def component_distribution(self, k: int) -> dist.TorchDistribution:
        """p(z | y = k); only for mixture priors."""
        raise NotImplementedError(f"prior {self.name!r} has no discrete component")


@PRIORS.register("standard")
class StandardPrior(Prior):
    r"""The classic VAE prior.

    .. math::

        z \sim \mathcal{N}(0, I_D)
    """

    story = "z ~ N(0, I)"
    direct_elbo = True

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        self.register_buffer("_zeros", torch.zeros(latent_dim))

    def marginal(self) -> dist.TorchDistribution:
        return dist.Normal(self._zeros, 1.0).to_event(1)

    def forward(self, component: torch.Tensor | None = None) -> torch.Tensor:
        return pyro.sample("z", self.marginal())


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

    :param latent_dim: dimension D of ``z``.
    :param num_components: number K of mixture components.
    :param init_spread: standard deviation of the random initial means.
    :param learn_weights: learn :math:`\pi`; if False it is fixed at uniform.
    """

    latent_sites = ("y", "z")
    enumerated_sites = ("y",)
    discrete_site = "y"
    story = "y ~ Cat(pi), z | y ~ N(mu_y, diag sigma_y^2)"
    direct_elbo = True

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
        self.scales = PyroParam(torch.ones(num_components, latent_dim), constraints.positive)

    @classmethod
    def from_config(cls, config: TrainConfig, data_dim: int, guide: torch.nn.Module) -> GMMPrior:
        return cls(config.latent_dim, config.components, learn_weights=config.mixture_weights == "learned")

    @property
    def num_components(self) -> int:
        return self.logits.shape[-1]

    def y_dist(self) -> dist.TorchDistribution:
        return dist.Categorical(logits=self.logits)

    @property
    def component_scales(self) -> torch.Tensor:
        """The components' scale parameters, shape (K, D) (diagonal) or (K, D, D)."""
        return self.scales

    def _gaussian(self, loc: torch.Tensor, scale: torch.Tensor) -> dist.TorchDistribution:
        return dist.Normal(loc, scale).to_event(1)

    def z_dist(self, y: torch.Tensor) -> dist.TorchDistribution:
        # Plain indexing broadcasts from the right: y of shape (K, 1) under
        # enumeration gives (K, 1, D); y of shape (B,) gives (B, D).
        return self._gaussian(self.locs[y], self.component_scales[y])

    def forward(self, component: torch.Tensor | None = None) -> torch.Tensor:
        y = self._component_site("y", self.y_dist(), component)
        return pyro.sample("z", self.z_dist(y))

    def _components(self) -> dist.TorchDistribution:
        return self._gaussian(self.locs, self.component_scales)  # batch (K,)

    def marginal(self) -> dist.TorchDistribution:
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits), self._components())

    def _diagonal_mixture(self) -> DiagNormalMixture | None:
        # The diagonal mixture as matrix products (DiagNormalMixture), not through
        # torch's (N, K, D) tensor: the same numbers, faster at every K (K = 500, D = 40:
        # 14x on 10,000 points; K = 10 at a training step: as fast).  None for a subclass
        # with other components (gmm-full, or a user's): it scores its own marginal.
        cls = type(self)
        if cls._gaussian is GMMPrior._gaussian and cls.marginal is GMMPrior.marginal:
            return DiagNormalMixture(self.logits, self.locs, self.component_scales)
        return None

    def log_prob(self, latents: Mapping[str, torch.Tensor]) -> torch.Tensor:
        mixture = self._diagonal_mixture()
        return (mixture or self.marginal()).log_prob(latents["z"])

    def component_log_posterior(self, latents: Mapping[str, torch.Tensor]) -> torch.Tensor:
        mixture = self._diagonal_mixture()
        if mixture is not None:
            return mixture.component_log_prob(latents["z"]).log_softmax(-1)
        joint = self._components().log_prob(latents["z"].unsqueeze(-2)) + self.logits.log_softmax(-1)
        return joint.log_softmax(-1)

    def component_distribution(self, k: int) -> dist.TorchDistribution:
        return self._gaussian(self.locs[k], self.component_scales[k])


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
    prior can start from such a fit (``--init-from``, :func:`mixvae.inference.warmstart.fit_prior_to_codes`).
    """

    story = "y ~ Cat(pi), z | y ~ N(mu_y, L_y L_y^T) (full covariance)"

    def __init__(
        self, latent_dim: int, num_components: int, init_spread: float = 1.0, learn_weights: bool = True
    ) -> None:
        super().__init__(latent_dim, num_components, init_spread, learn_weights)
        del self.scales
        eye = torch.eye(latent_dim).expand(num_components, latent_dim, latent_dim).clone()
        self.scale_tril = PyroParam(eye, constraints.lower_cholesky)

    @property
    def component_scales(self) -> torch.Tensor:
        return self.scale_tril

    def _gaussian(self, loc: torch.Tensor, scale: torch.Tensor) -> dist.TorchDistribution:
        return dist.MultivariateNormal(loc, scale_tril=scale)


@PRIORS.register("vampprior")
class VampPrior(Prior):
    r"""The VampPrior of Tomczak & Welling (2018): the encoder at learned pseudo-inputs.

    .. math::

        z \sim \frac{1}{K} \sum_{k=1}^{K} q_\phi(z \mid u_k)

    The pseudo-inputs :math:`u_k` are learned; :math:`q_\phi` is the paired
    guide's own encoder distribution (``guide.q_z``), so with the ``mixture``
    guide every component is itself a mixture and the density is a log-sum-exp
    over both levels, with no constant dropped.

    :param encoder: the guide whose ``q_z`` defines the components; it is used,
        not owned (its parameters stay the guide's).
    :param num_pseudo_inputs: K.
    :param data_dim: dimension P of the pseudo-inputs.
    :param unit_interval: keep the pseudo-inputs in [0, 1] (sigmoid), as the
        data of a Bernoulli likelihood are.
    :param pseudo_init: ``"random"``: start from near-constant grey images
        (sigmoid(-2 + 0.1 eps) ~ 0.12; Tomczak & Welling's code starts from
        near-constant images too, N(mean, 0.01) through a hardtanh);
        ``"data"``: :meth:`initialise_from_data` replaces them by K distinct
        random training images (their ``use_training_data_init``).
    """

    story = "z ~ (1/K) sum_k q(z | u_k) with K learned pseudo-inputs u_k (the guide's encoder)"
    direct_elbo = True

    def __init__(
        self,
        encoder: torch.nn.Module,
        num_pseudo_inputs: int,
        data_dim: int,
        unit_interval: bool = True,
        pseudo_init: str = "random",
    ) -> None:
        super().__init__(encoder.latent_dim)
        if pseudo_init not in ("random", "data"):
            raise ConfigError(f"pseudo_init must be 'random' or 'data', got {pseudo_init!r}")
        self.pseudo_init = pseudo_init
        # Not a submodule: the encoder's parameters belong to the guide, and
        # registering them twice would hand them to the optimiser twice.
        object.__setattr__(self, "_encoder", encoder)
        self.unit_interval = unit_interval
        init = torch.randn(num_pseudo_inputs, data_dim) * 0.1 + (-2.0 if unit_interval else 0.0)
        self.pseudo_raw = torch.nn.Parameter(init)

    @classmethod
    def from_config(cls, config: TrainConfig, data_dim: int, guide: torch.nn.Module) -> VampPrior:
        from mixvae.models.decoders import LIKELIHOODS

        unit = LIKELIHOODS[config.likelihood].unit_interval
        return cls(guide, config.pseudo_inputs, data_dim, unit, config.pseudo_init)

    @torch.no_grad()
    def initialise_from_data(self, x: torch.Tensor, generator: torch.Generator) -> None:
        if self.pseudo_init != "data":
            return
        k, p = self.pseudo_raw.shape
        if x.ndim != 2 or x.shape[1] != p:
            raise ConfigError(
                f"data of shape {tuple(x.shape)} cannot initialise {k} pseudo-inputs of size {p}"
            )
        if len(x) < k:
            raise ConfigError(
                f"--pseudo-init data needs at least {k} training points, got {len(x)}; "
                "use fewer --pseudo-inputs or --pseudo-init random"
            )
        pick = torch.randperm(len(x), generator=generator, device=generator.device)[:k]
        u = x[pick.to(x.device)].to(self.pseudo_raw)
        if self.unit_interval:
            # logit of images clipped to [0.01, 0.99]: exact 0/1 pixels would need infinite raw values
            u = torch.logit(u.clamp(0.01, 0.99))
        self.pseudo_raw.copy_(u)

    def pseudo_inputs(self) -> torch.Tensor:
        """The K pseudo-inputs, shape (K, P)."""
        return torch.sigmoid(self.pseudo_raw) if self.unit_interval else self.pseudo_raw

    def marginal(self) -> dist.TorchDistribution:
        u = self.pseudo_inputs()
        try:
            logits, locs, scales = self._encoder.diag_components(u)  # (K, M), (K, M, D), (K, M, D)
        except NotImplementedError:
            uniform = dist.Categorical(logits=torch.zeros(u.shape[0], device=u.device))
            return dist.MixtureSameFamily(uniform, self._encoder.q_z(u))
        # (1/K) sum_k sum_m w_km N(locs_km, scales_km): one mixture of K * M Gaussians
        log_w = logits.log_softmax(-1) - math.log(u.shape[0])
        return DiagNormalMixture(log_w.flatten(), locs.flatten(0, 1), scales.flatten(0, 1))

    def forward(self, component: torch.Tensor | None = None) -> torch.Tensor:
        return pyro.sample("z", self.marginal())


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

    latent_sites = ("w", "c", "z")
    enumerated_sites = ("c",)
    discrete_site = "c"
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
    def from_config(cls, config: TrainConfig, data_dim: int, guide: torch.nn.Module) -> DilokthanakulPrior:
        w_dim = config.w_dim or config.latent_dim
        return cls(config.latent_dim, config.components, w_dim, zprior_threshold=config.zprior_threshold)

    @property
    def num_components(self) -> int:
        return self._k

    def w_dist(self) -> dist.TorchDistribution:
        return dist.Normal(self._zeros_w, 1.0).to_event(1)

    def component_params(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Means and scales of p(z | w, c) for every c, each of shape ``w.shape[:-1] + (K, D)``."""
        out = self.net(w).unflatten(-1, (self._k, 2, self.latent_dim))
        return out[..., 0, :], positive(out[..., 1, :])

    def forward(self, component: torch.Tensor | None = None) -> torch.Tensor:
        w = pyro.sample("w", self.w_dist())
        locs, scales = self.component_params(w)
        c = self._component_site("c", dist.Categorical(logits=self._logits), component)
        # Vindex broadcasts c (K, 1) under enumeration against the batch of w.
        z = pyro.sample("z", dist.Normal(Vindex(locs)[..., c, :], Vindex(scales)[..., c, :]).to_event(1))
        if self.zprior_threshold is not None:
            # log p(z|w) = E_r[log p(z|w,c)] - KL(r || p(c)) with r = p(c|w,z); adding
            # min(0, KL - lambda) replaces -KL by the constant -lambda while KL < lambda.
            r = self._component_logits(locs, scales, z).log_softmax(-1)
            kl = (r.exp() * (r - self._logits.log_softmax(-1))).sum(-1)
            clamp = dist.Unit((kl - self.zprior_threshold).clamp(max=0.0))
            pyro.sample(
                "zprior_clamp", clamp, obs=clamp.sample(), infer={"is_auxiliary": True, "kl_term": True}
            )
        return z

    def _component_logits(self, locs: torch.Tensor, scales: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self._logits.log_softmax(-1) + dist.Normal(locs, scales).log_prob(z.unsqueeze(-2)).sum(-1)

    def log_prob(self, latents: Mapping[str, torch.Tensor]) -> torch.Tensor:
        w, z = latents["w"], latents["z"]
        locs, scales = self.component_params(w)
        return self.w_dist().log_prob(w) + torch.logsumexp(self._component_logits(locs, scales, z), -1)

    def component_log_posterior(self, latents: Mapping[str, torch.Tensor]) -> torch.Tensor:
        locs, scales = self.component_params(latents["w"])
        return self._component_logits(locs, scales, latents["z"]).log_softmax(-1)

    def sample_z(self, n: int, component: int | None = None) -> torch.Tensor:
        w = self.w_dist().sample((n,))
        locs, scales = self.component_params(w)  # (n, K, D)
        if component is None:
            c = dist.Categorical(logits=self._logits).sample((n,))
        else:
            c = torch.full((n,), component, dtype=torch.long, device=w.device)
        pick = c[:, None, None].expand(n, 1, self.latent_dim)
        return dist.Normal(locs.gather(1, pick)[:, 0], scales.gather(1, pick)[:, 0]).sample()


@PRIORS.register("posthoc-gmm")
class PosthocGMMPrior(StandardPrior):
    r"""Ex-post density estimation (Ghosh et al. 2020).

    .. math::

        z \sim \mathcal{N}(0, I_D) \ \text{(training)}, \qquad
        z \sim \sum_k \hat\pi_k \mathcal{N}(\hat\mu_k, \hat\Sigma_k) \ \text{(after training)}

    Trained exactly like ``standard``; at the end of training a full-covariance
    GMM is fitted to the aggregate posterior and saved with the run
    (``posthoc_gmm.pt``, see :mod:`mixvae.evaluation.posthoc`) for sampling and
    likelihood evaluation.  Any other run gets one on first use.
    """

    story = "z ~ N(0, I) in training; then a GMM fitted to q(z) for sampling and likelihood"
    fits_posthoc_gmm = True
