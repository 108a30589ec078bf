"""Pyro's ELBOs as mixvae uses them for training and evaluation, and KL warm-up."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro.infer import (
    ELBO,
    JitTraceEnum_ELBO,
    JitTraceMeanField_ELBO,
    TraceEnum_ELBO,
    TraceMeanField_ELBO,
)
from pyro.poutine.messenger import Messenger

from mixvae.rng import seeded


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


class _JitTraceMeanField_ELBO(JitTraceMeanField_ELBO):
    """Pyro's JitTraceMeanField_ELBO, compiled once instead of at every call.

    Pyro 1.9's ``differentiable_loss`` looks for its compiled function under
    ``_loss_and_surrogate_loss`` but stores it as ``_differentiable_loss``, so
    it traces the model and guide again at every step (45 ms a step instead of
    2 on a small pair, and other draws than the eager ELBO's).
    """

    @property
    def _loss_and_surrogate_loss(self) -> Any:
        return getattr(self, "_differentiable_loss", None)


def make_elbo(
    num_particles: int = 1,
    vectorize_particles: bool = False,
    enumerates: bool = True,
    analytic_kl: bool = True,
    jit: bool = False,
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
    :param jit: Pyro's compiled variant (``JitTraceEnum_ELBO``, ``JitTraceMeanField_ELBO``;
        ``--jit``).  It traces the model and guide on its first call: the
        arguments' shapes may change later, settings baked into the programs
        (a KL warm-up scale) may not.
    """
    extra: dict[str, Any] = {"ignore_jit_warnings": True} if jit else {}
    if not enumerates and analytic_kl:
        cls = _JitTraceMeanField_ELBO if jit else TraceMeanField_ELBO
        return cls(
            max_plate_nesting=1, num_particles=num_particles, vectorize_particles=vectorize_particles, **extra
        )
    cls = JitTraceEnum_ELBO if jit else TraceEnum_ELBO
    return cls(
        max_plate_nesting=1,
        num_particles=num_particles,
        vectorize_particles=vectorize_particles,
        strict_enumeration_warning=enumerates,
        **extra,
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
