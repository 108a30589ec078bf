"""The ELBO used for training and evaluation, and KL warm-up."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pyro
import torch
from pyro.infer import ELBO, TraceEnum_ELBO, TraceMeanField_ELBO
from pyro.poutine.messenger import Messenger

from mixvae.rng import seeded

if TYPE_CHECKING:
    from mixvae.guides import Guide
    from mixvae.models import VAE


class LatentScale(Messenger):
    """Multiply the log-density of every *latent* sample site by ``beta``.

    Applied to both model and guide it turns the ELBO into
    ``E_q[log p(x | z)] - beta * KL``, with the same ``beta`` on every latent
    site (``y`` included, as :class:`~pyro.infer.TraceEnum_ELBO` requires of an
    enumerated site and the sites that depend on it).  Observed sites keep
    their scale, except factors marked ``infer={"kl_term": True}`` (corrections
    to a KL term, such as the z-prior clamp).  ``beta`` may be changed between steps.
    """

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = beta

    def _process_message(self, msg: dict[str, Any]) -> None:
        if (
            msg["type"] == "sample"
            and self.beta != 1.0
            and (not msg["is_observed"] or msg["infer"].get("kl_term"))
        ):
            msg["scale"] = self.beta * msg["scale"]


def make_elbo(
    num_particles: int = 1,
    vectorize_particles: bool = False,
    enumerates: bool = True,
    analytic_kl: bool = True,
) -> ELBO:
    """The objective of every model/guide pair.

    A pair with a discrete site to sum out gets
    :class:`~pyro.infer.TraceEnum_ELBO` (``max_plate_nesting=1``).  A pair with
    nothing to enumerate gets, by default, Pyro's
    :class:`~pyro.infer.TraceMeanField_ELBO`: the same ELBO, with the KL term
    of each latent site in closed form where torch registers one for the
    guide's and the prior's distributions (``gaussian`` guide with the
    ``standard`` prior, or with a ``gmm`` component whose ``y`` is observed)
    and the Monte Carlo estimate ``log q(z) - log p(z)`` elsewhere.  Its
    expectation is the same, its variance lower, and it skips the enumeration
    machinery.  All mixvae guides are mean-field given the sites they
    condition on, which that estimator requires.

    :param enumerates: whether the pair has a discrete site to sum out; when
        it has none and ``analytic_kl`` is off, Pyro's "no sites configured for
        enumeration" warning is expected and silenced.
    :param analytic_kl: use closed-form KL terms when nothing is enumerated
        (``--kl analytic``); ``False`` keeps the Monte Carlo estimate (``--kl mc``).
    """
    if not enumerates and analytic_kl:
        return TraceMeanField_ELBO(
            max_plate_nesting=1, num_particles=num_particles, vectorize_particles=vectorize_particles
        )
    return TraceEnum_ELBO(
        max_plate_nesting=1,
        num_particles=num_particles,
        vectorize_particles=vectorize_particles,
        strict_enumeration_warning=enumerates,
    )


def has_discrete_site(model: torch.nn.Module, guide: torch.nn.Module) -> bool:
    prior = getattr(model, "prior", None)
    return bool(getattr(prior, "discrete_site", None) or getattr(guide, "discrete_site", None))


@torch.no_grad()
def evaluate_elbo(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *,
    batch_size: int = 1000,
    num_particles: int = 1,
    seed: int = 0,
    analytic_kl: bool = True,
) -> float:
    """The ELBO per datapoint (nats) of ``x``, with discrete sites summed out exactly.

    Runs in minibatches under a forked RNG seeded with ``seed``, so the result
    is reproducible and the caller's random stream is left untouched.
    ``analytic_kl`` as in :func:`make_elbo`.
    """
    elbo = make_elbo(
        num_particles,
        vectorize_particles=num_particles > 1,
        enumerates=has_discrete_site(model, guide),
        analytic_kl=analytic_kl,
    )
    total = 0.0
    # A scoped parameter store: evaluating must not leave the modules' parameters
    # registered in the caller's global store.
    with (
        seeded(seed, x.device),
        pyro.validation_enabled(False),
        pyro.get_param_store().scope(),
    ):
        for batch in x.split(batch_size):
            total += elbo.loss(model, guide, batch)
    return -total / len(x)


def direct_elbo_applies(model: torch.nn.Module, guide: torch.nn.Module) -> bool:
    """Whether :func:`direct_loss` is exactly the loss of :func:`make_elbo` for this pair.

    True for a :class:`~mixvae.models.VAE` whose prior declares ``direct_elbo``
    (its sites are ``z`` drawn from :meth:`~mixvae.models.priors.Prior.marginal`,
    or ``y`` then ``z | y`` of a Gaussian mixture) with a guide that draws only
    ``z ~ q_z(x)``, or one that provides the prior's ``y`` and implements
    :meth:`~mixvae.guides.Guide.enumerated_q`.  Subclasses that override the
    Pyro programs (``forward``, ``sample_latents``) fall back to Pyro.
    """
    from mixvae.guides.base import Guide
    from mixvae.models.priors import GMMPrior
    from mixvae.models.vae import VAE

    prior = getattr(model, "prior", None)
    if not isinstance(model, VAE) or type(model).forward is not VAE.forward:
        return False
    if not isinstance(guide, Guide) or not getattr(prior, "direct_elbo", False):
        return False
    # the declaration holds for the Pyro program of the class that made it, not for a
    # subclass that rewrites that program
    if _declared_by(type(prior), "forward") is not _declared_by(type(prior), "direct_elbo"):
        return False
    if guide.discrete_site is None:
        return guide.provides == ("z",) and _declared_by(type(guide), "sample_latents") is Guide
    return (
        isinstance(prior, GMMPrior)
        and guide.discrete_site == prior.discrete_site
        and _declared_by(type(guide), "enumerated_q") is not Guide
        and _declared_by(type(guide), "enumerated_q") is _declared_by(type(guide), "sample_latents")
    )


def _declared_by(cls: type, name: str) -> type | None:
    """The class in ``cls``'s method resolution order that defines ``name``."""
    return next((c for c in cls.__mro__ if name in vars(c)), None)


def direct_loss(
    model: VAE,
    guide: Guide,
    x: torch.Tensor,
    num_data: int | None = None,
    *,
    beta: float = 1.0,
    analytic_kl: bool = True,
) -> torch.Tensor:
    r"""The negative ELBO of :func:`make_elbo` for a minibatch, computed without Pyro's tracing.

    Pyro's ELBOs run the model and the guide under effect handlers at every
    step (a few ms of Python per step, as much as the networks of an MNIST
    VAE on a CPU).  For the pairs of :func:`direct_elbo_applies` the same
    estimator is a few lines over the distributions the model and guide
    already expose, with the same draws from torch's random stream:

    * a guide without a discrete site: :math:`z \sim q(z \mid x)` (pathwise),
      :math:`-\log p(x \mid z) + \beta\,[\log q(z \mid x) - \log p(z)]`, with
      :math:`\log p(z)` the prior's exact marginal (a mixture's ``y`` summed
      out, as ``TraceEnum_ELBO`` enumerates it), or :math:`\beta\,
      \mathrm{KL}(q \,\|\, p)` in closed form where ``TraceMeanField_ELBO``
      would use it (``analytic_kl``, nothing to enumerate, a KL that torch registers);
    * a guide that provides ``y`` (enumerated in the guide): :math:`\sum_y
      q(y \mid x)\,\{-\log p(x \mid z_y) + \beta\,[\log q(z_y \mid x, y) +
      \log q(y \mid x) - \log p(z_y \mid y) - \log p(y)]\}`, one
      :math:`z_y \sim q(z \mid x, y)` per value of y.

    ``beta`` is the KL warm-up factor of :class:`LatentScale`.  The result
    is summed over the minibatch and scaled by ``num_data / len(x)``, like the
    ``"data"`` plate.  Tests check value and gradients against Pyro's ELBOs for
    every pair it applies to.
    """
    prior, decoder = model.prior, model.decoder
    scale = (len(x) if num_data is None else num_data) / len(x)
    if guide.discrete_site is None:
        q = guide.q_z(x)
        z = q.rsample()
        kl = None
        if analytic_kl and prior.discrete_site is None:
            try:
                kl = torch.distributions.kl_divergence(q, prior.marginal())
            except NotImplementedError:
                pass
        if kl is None:
            kl = q.log_prob(z) - prior.log_prob({"z": z})
        per_point = beta * kl - decoder.log_likelihood(z, x)
    else:
        log_qy, q = guide.enumerated_q(x)  # (K, B), batch (K, B)
        z = q.rsample()  # (K, B, D)
        y = torch.arange(log_qy.shape[0], device=x.device).unsqueeze(-1)  # (K, 1), as Pyro enumerates
        log_p = prior.y_dist().log_prob(y) + prior.z_dist(y).log_prob(z)
        cost = beta * (q.log_prob(z) + log_qy - log_p) - decoder.log_likelihood(z, x)
        per_point = (log_qy.exp() * cost).sum(0)
    return per_point.sum() * scale


class TrainingLoss:
    """The training loss of a run's unlabelled minibatches, as the trainer and Lightning compute it.

    :func:`direct_loss` where :func:`direct_elbo_applies` and ``objective`` is
    ``"auto"``; otherwise the ELBO of :func:`make_elbo` on the model and guide
    under :class:`LatentScale`.  Calling it with ``(x, num_data, beta)`` gives
    the negative ELBO of the minibatch scaled to the data set, with KL warm-up ``beta``.
    """

    def __init__(
        self, model: VAE, guide: Guide, *, objective: str = "auto", analytic_kl: bool = True
    ) -> None:
        self.model, self.guide, self.analytic_kl = model, guide, analytic_kl
        #: whether the loss skips Pyro's tracing (see :func:`direct_loss`)
        self.direct = objective == "auto" and direct_elbo_applies(model, guide)
        self.elbo = make_elbo(enumerates=has_discrete_site(model, guide), analytic_kl=analytic_kl)
        self.warmup = LatentScale()

    def __call__(self, x: torch.Tensor, num_data: int, beta: float = 1.0) -> torch.Tensor:
        if self.direct:
            return direct_loss(self.model, self.guide, x, num_data, beta=beta, analytic_kl=self.analytic_kl)
        self.warmup.beta = beta
        return self.elbo.differentiable_loss(self.warmup(self.model), self.warmup(self.guide), x, num_data)
