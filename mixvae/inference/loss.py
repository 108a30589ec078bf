"""The training loss of a run, shared by the plain loop and the Lightning module."""

from __future__ import annotations

import warnings

import torch

from mixvae.guides import Guide
from mixvae.inference.direct import direct_loss, direct_problem, pyro_loss, verify_direct
from mixvae.inference.iwae import iwae_loss
from mixvae.inference.objectives import has_discrete_site, make_elbo
from mixvae.models import VAE


class TrainingLoss:
    """The training loss of a run's unlabelled minibatches, as the trainer and Lightning compute it.

    :func:`~mixvae.inference.direct.direct_loss` where ``objective`` is
    ``"auto"`` and the pair has no :func:`~mixvae.inference.direct.direct_problem`;
    the importance-weighted bound of :func:`~mixvae.inference.iwae.iwae_loss`
    with ``particles`` samples where it is ``"iwae"`` (for an ELBO, ``particles``
    M > 1 averages M draws per point, as Pyro's ``num_particles`` with vectorised
    particles: Dilokthanakul et al.'s M); Pyro's compiled ELBO with
    ``jit``; otherwise Pyro's ELBO of :func:`~mixvae.inference.objectives.make_elbo`
    under :class:`~mixvae.inference.objectives.LatentScale`.  Calling it with
    ``(x, num_data, beta)`` gives the negative ELBO of the minibatch scaled to
    the data set, with KL warm-up ``beta`` (for ``"iwae"``, the negative bound).
    """

    def __init__(
        self,
        model: VAE,
        guide: Guide,
        *,
        objective: str = "auto",
        analytic_kl: bool = True,
        particles: int = 1,
        jit: bool = False,
    ) -> None:
        self.model, self.guide, self.analytic_kl, self.jit = model, guide, analytic_kl, jit
        #: K of the importance-weighted objective (``None``: an ELBO)
        self.particles = particles if objective == "iwae" else None
        #: M, the draws per point of an ELBO (1 for the importance-weighted objective)
        self.elbo_particles = 1 if objective == "iwae" else particles
        #: why the direct objective does not apply (``None`` when it does, or was not asked for)
        self.problem = direct_problem(model, guide) if objective == "auto" and not jit else None
        #: whether the loss skips Pyro's tracing
        self.direct = objective == "auto" and not jit and self.problem is None
        # Pyro's ELBO, made once (not at every step) for the pairs that train through it
        self.elbo = (
            None
            if self.direct or self.particles is not None
            else make_elbo(
                particles,
                vectorize_particles=particles > 1,
                enumerates=has_discrete_site(model, guide),
                analytic_kl=analytic_kl,
                jit=jit,
            )
        )

    def describe(self) -> str:
        """Which objective computes the loss, and why (for ``summary.json``)."""
        if self.particles is not None:
            return f"iwae (K = {self.particles})"
        draws = f" (M = {self.elbo_particles} draws per point)" if self.elbo_particles > 1 else ""
        if self.direct:
            return "direct" + draws
        if self.jit:
            return "pyro jit" + draws
        return "pyro" + draws + (f" ({self.problem})" if self.problem else "")

    def _direct_settings(self) -> dict[str, object]:
        return {"analytic_kl": self.analytic_kl, "particles": self.elbo_particles}

    def verify(self, x: torch.Tensor, num_data: int, beta: float = 1.0) -> None:
        """Check the direct loss against Pyro's ELBO on ``x`` (the first step of a run); see
        :func:`~mixvae.inference.direct.verify_direct`."""
        if self.direct:
            verify_direct(self.model, self.guide, x, num_data, beta=beta, **self._direct_settings())

    def __call__(self, x: torch.Tensor, num_data: int, beta: float = 1.0) -> torch.Tensor:
        if self.particles is not None:
            return iwae_loss(self.model, self.guide, x, num_data, self.particles, beta=beta)
        if self.direct:
            return direct_loss(self.model, self.guide, x, num_data, beta=beta, **self._direct_settings())
        with warnings.catch_warnings():
            if self.jit:  # asked for with --jit; its help says that torch.jit.trace is deprecated
                warnings.filterwarnings("ignore", "`torch.jit.trace` is deprecated", DeprecationWarning)
            return pyro_loss(
                self.model, self.guide, x, num_data, beta=beta, analytic_kl=self.analytic_kl, elbo=self.elbo
            )
