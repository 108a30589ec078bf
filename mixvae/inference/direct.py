r"""The direct ELBO: Pyro's ELBO estimator for mixvae pairs, read from their declared sites.

Pyro's ELBOs run the model and the guide under effect handlers at every step
(a few ms of Python per step, as much as the networks of an MNIST VAE on a
CPU).  For a :class:`~mixvae.models.VAE` and a :class:`~mixvae.guides.Guide`
whose Pyro programs are the ones their declarations define
(:mod:`mixvae.sites`), the same estimator is a few lines over the declared
distributions, with the same draws from torch's random stream:

* every continuous guide site :math:`v \sim q(v \mid x, \ldots)` (pathwise);
  a guide-enumerated site (``y`` of the ``categorical`` guide) takes all its
  values at once, each weighted by :math:`q(y \mid x)`;
* :math:`-\log p(x \mid z) + \beta\,[\log q - \log p]`, with :math:`\log p`
  the prior's declared density at the guide's values, a model-enumerated
  site summed out exactly (what :class:`~pyro.infer.TraceEnum_ELBO` does);
* with nothing to enumerate and ``analytic_kl``, the closed-form KL of each
  site where torch registers one (what :class:`~pyro.infer.TraceMeanField_ELBO` does).

:class:`DirectELBO` packages it as a :class:`pyro.infer.ELBO` for any
``SVI`` loop.  :func:`verify_direct` checks it against Pyro's ELBO on one
batch (the trainer does so on the first step of every run) and, on a
mismatch, names the site whose declared distribution and Pyro program differ.
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer import ELBO
from pyro.nn.module import pyro_method
from pyro.poutine.util import site_is_subsample

from mixvae import sites as _sites
from mixvae.errors import ConfigError, ObjectiveMismatch
from mixvae.guides.base import Guide
from mixvae.inference.objectives import LatentScale, has_discrete_site, make_elbo
from mixvae.models.priors import Prior
from mixvae.models.vae import VAE
from mixvae.nn import check_batch

#: relative tolerance of :func:`verify_direct` (float32 sums of a minibatch in another order)
VERIFY_RTOL = 1e-4


def direct_problem(model: Any, guide: Any) -> str | None:
    """Why the direct ELBO cannot compute this pair's ELBO from its declarations (``None``: it can).

    It can when the model is a :class:`~mixvae.models.VAE` and the guide a
    :class:`~mixvae.guides.Guide` whose Pyro programs are the ones their
    declarations define (neither overrides ``forward`` / ``sample_latents``),
    and at most one side enumerates a discrete site.
    """
    if not isinstance(model, VAE) or not isinstance(guide, Guide):
        return "the model is not a mixvae VAE or the guide not a mixvae Guide"
    prior = model.prior
    if type(model).forward is not VAE.forward:
        return f"{type(model).__name__} overrides VAE.forward"
    if not isinstance(prior, Prior) or type(prior).forward is not Prior.forward:
        return f"prior {prior.name!r} ({type(prior).__name__}) writes its own Pyro program (forward)"
    if type(guide).sample_latents is not Guide.sample_latents or type(guide).forward is not Guide.forward:
        return f"guide {guide.name!r} ({type(guide).__name__}) writes its own Pyro program (sample_latents)"
    in_model = [s for s in prior.enumerated_sites if s not in guide.provides]
    if in_model and guide.discrete_site is not None:
        return "both the model and the guide enumerate a discrete site"
    return None


def direct_loss(
    model: VAE,
    guide: Guide,
    x: torch.Tensor,
    num_data: int | None = None,
    *,
    beta: float = 1.0,
    analytic_kl: bool = True,
    particles: int = 1,
) -> torch.Tensor:
    """The negative ELBO of :func:`~mixvae.inference.objectives.make_elbo` for a minibatch,
    computed from the declared sites without Pyro's tracing (see the module doc).

    ``beta`` is the KL warm-up factor of
    :class:`~mixvae.inference.objectives.LatentScale`.  The result is summed
    over the minibatch and scaled by ``num_data / len(x)``, like the
    ``"data"`` plate.  ``particles`` M > 1 averages M draws of the latents per
    point (``make_elbo(M, vectorize_particles=True)``, with the same draws): the
    encoder runs once, its features broadcast over a leftmost particle dimension.
    Only for pairs without a :func:`direct_problem`.
    """
    prior, decoder = model.prior, model.decoder
    check_batch(x, decoder.data_shape)
    scale = (len(x) if num_data is None else num_data) / len(x)
    h = guide.encode(x)
    dims = 1  # batch dimensions of the drawn values: (B,), or (M, B) with particles
    if particles > 1:  # as Pyro's particle plate (dim -2) lays them out
        h = (
            tuple(t.expand(particles, *t.shape) for t in h)
            if isinstance(h, tuple)
            else h.expand(particles, *h.shape)
        )
        dims = 2
    values: dict[str, torch.Tensor] = {}
    drawn: dict[str, tuple[torch.distributions.Distribution, torch.Tensor]] = {}
    log_q: torch.Tensor | float = 0.0
    weight = None  # q(y | x) of a guide-enumerated y, values in dimension 0
    for site in guide.sites:
        fn = guide.site_dist(site, h, values)
        if site.enumerated:
            # (K, 1), or (K, 1, 1) with particles, as Pyro enumerates
            values[site.name] = _sites.enumerate_values(fn, batch_dims=dims)
            log_qy = fn.log_prob(values[site.name])  # (K, B), or (K, M, B)
            log_q, weight = log_q + log_qy, log_qy.exp()
        else:
            values[site.name] = fn.rsample()
            drawn[site.name] = (fn, values[site.name])
    log_lik = decoder.log_likelihood(values["z"], x)
    if analytic_kl and not has_discrete_site(model, guide):
        kl: torch.Tensor | float = 0.0
        for site in prior.sites:
            p = prior.site_dist(site, values)
            q, v = drawn[site.name]
            try:
                kl = kl + torch.distributions.kl_divergence(q, p)
            except NotImplementedError:
                kl = kl + q.log_prob(v) - p.log_prob(v)
        cost = beta * kl - log_lik
    else:
        for q, v in drawn.values():
            log_q = log_q + q.log_prob(v)
        if all(name in values for name in prior.latent_sites):
            log_p, _ = _sites.log_density(prior.sites, prior.site_dist, values)
        else:  # a model-enumerated site: summed out (prior.log_prob reads the same declaration)
            log_p = prior.log_prob(values)
        cost = beta * (log_q - log_p) - log_lik
    per_point = cost if weight is None else (weight * cost).sum(0)
    if particles > 1:
        per_point = per_point.mean(0)
    return per_point.sum() * scale


def _within_pyro_contexts(model: torch.nn.Module, guide: torch.nn.Module, fn: Callable[[], Any]) -> Any:
    # Inside its modules' Pyro contexts (pyro.nn.pyro_method), every parameter the loss
    # reads emits a pyro.param statement: what SVI collects to hand to its optimiser.
    return pyro_method(lambda _model: pyro_method(lambda _guide: fn())(guide))(model)


def pyro_loss(
    model: Any,
    guide: Any,
    x: torch.Tensor,
    num_data: int | None,
    *,
    beta: float,
    analytic_kl: bool,
    elbo: ELBO | None = None,
    particles: int = 1,
) -> torch.Tensor:
    """Pyro's ELBO of :func:`~mixvae.inference.objectives.make_elbo` under KL warm-up ``beta``
    (``elbo``: that ELBO object, made once by a caller that scores many batches; otherwise
    made here with ``particles`` vectorised particles)."""
    if elbo is None:
        elbo = make_elbo(
            particles,
            vectorize_particles=particles > 1,
            enumerates=has_discrete_site(model, guide),
            analytic_kl=analytic_kl,
        )
    if beta != 1.0:  # (at beta = 1 the programs themselves: a JIT ELBO compiles once per program)
        warm = LatentScale(beta)
        model, guide = warm(model), warm(guide)
    return elbo.differentiable_loss(model, guide, x, num_data=num_data)


def verify_direct(
    model: VAE,
    guide: Guide,
    x: torch.Tensor,
    num_data: int | None = None,
    *,
    beta: float = 1.0,
    analytic_kl: bool = True,
    seed: int = 0,
    particles: int = 1,
) -> float:
    """Check :func:`direct_loss` against Pyro's ELBO on ``x`` with the same random draws
    (``particles`` of them per point).

    Runs under a forked random stream (the caller's is untouched).

    :returns: the relative difference (at most :data:`VERIFY_RTOL`).
    :raises ObjectiveMismatch: naming the site whose declared distribution and
        Pyro program disagree, when the two losses differ.
    """
    devices = [x.device] if x.device.type == "cuda" else []
    # (with gradients: Pyro's differentiable_loss refuses to run without them)
    with torch.random.fork_rng(devices=devices), pyro.validation_enabled(False):
        torch.manual_seed(seed)
        common = dict(beta=beta, analytic_kl=analytic_kl, particles=particles)
        ours = float(direct_loss(model, guide, x, num_data, **common).detach())
        torch.manual_seed(seed)
        theirs = float(pyro_loss(model, guide, x, num_data, **common).detach())
        gap = abs(ours - theirs) / max(abs(theirs), 1e-6)
        if not gap <= VERIFY_RTOL:  # also catches NaN
            torch.manual_seed(seed)
            with torch.no_grad():
                where = _mismatch_report(model, guide, x, num_data)
            raise ObjectiveMismatch(
                f"the direct ELBO ({ours:.6g}) differs from Pyro's ({theirs:.6g}) on the first batch: "
                f"{where}; make the part's Pyro program the one its sites declare, or train with "
                "--objective pyro"
            )
    return gap


def _site_gap(traced: dict[str, Any], declared: torch.distributions.Distribution) -> float:
    a = traced["fn"].log_prob(traced["value"])
    b = declared.log_prob(traced["value"])
    a, b = torch.broadcast_tensors(a, b)
    return float((a - b).abs().max()) if a.numel() else 0.0


def _mismatch_report(model: VAE, guide: Guide, x: torch.Tensor, num_data: int | None) -> str:
    """Which site's Pyro program differs from its declaration (for :func:`verify_direct`)."""
    guide_tr = poutine.trace(poutine.enum(guide, first_available_dim=-2)).get_trace(x, num_data)
    first = -3 if guide.discrete_site is not None else -2
    replayed = poutine.replay(model, trace=guide_tr)
    model_tr = poutine.trace(poutine.enum(replayed, first_available_dim=first)).get_trace(x, num_data)
    for who, part, tr, declared_sites in (
        ("guide", guide, guide_tr, guide.sites),
        ("prior", model.prior, model_tr, model.prior.sites),
    ):
        latent = [
            n
            for n, s in tr.nodes.items()
            if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)
        ]
        declared = _sites.names(declared_sites)
        extra = [n for n in latent if n not in declared]
        if extra:
            return f"the Pyro program of {who} {part.name!r} has the sites {extra}, which it does not declare"
        missing = [n for n in declared if n not in tr.nodes]
        if missing:
            return f"{who} {part.name!r} declares the sites {missing}, which its Pyro program lacks"
        values = {n: tr.nodes[n]["value"] for n in declared}
        h = guide.encode(x) if who == "guide" else None
        for site in declared_sites:
            if who == "guide" and site.enumerated and site.name not in latent:
                continue
            fn = guide.site_dist(site, h, values) if who == "guide" else part.site_dist(site, values)
            gap = _site_gap(tr.nodes[site.name], fn)
            if not gap <= 1e-4 * max(1.0, math.sqrt(len(x))):
                return (
                    f"site {site.name!r} of {who} {part.name!r}: the Pyro program's log-density differs from "
                    f"the declared {site.dist}() by up to {gap:.4g} nats"
                )
    prior = model.prior
    summed = [n for n in prior.enumerated_sites if n not in guide.provides]
    if summed:  # the direct loss reads prior.log_prob, which a subclass may have rewritten
        latents = {n: guide_tr.nodes[n]["value"] for n in prior.latent_sites if n not in summed}
        declared = _sites.summed_log_density(prior.sites, prior.site_dist, latents)
        gap = float((prior.log_prob(latents) - declared).abs().max())
        if not gap <= 1e-3:
            return (
                f"prior {prior.name!r}: log_prob differs from the density its sites declare by up to "
                f"{gap:.4g} nats"
            )
    if "x" in model_tr.nodes:
        traced = model_tr.nodes["x"]
        gap = float(
            (traced["fn"].log_prob(x) - model.decoder.log_likelihood(guide_tr.nodes["z"]["value"], x))
            .abs()
            .max()
        )
        if not gap <= 1e-3:
            return f"site 'x': the decoder's log_likelihood differs from its distribution by up to {gap:.4g} nats"
    return "every site agrees with its declaration; the difference is in how the terms are combined"


class DirectELBO(ELBO):
    r"""Pyro's ELBO for mixvae pairs, computed from their declared sites without tracing.

    Its loss and gradients equal those of
    ``TraceEnum_ELBO(max_plate_nesting=1)`` (``TraceMeanField_ELBO`` where
    nothing is enumerated and ``analytic_kl``) for every pair it applies to,
    with the same random draws, at a fraction of the cost per step::

        svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), DirectELBO())
        svi.step(x, num_data=len(data))

    The model and guide take ``(x, num_data=None)``.  For a pair it does not
    apply to (:func:`direct_problem`: a part that writes its own Pyro program),
    and for labelled minibatches, it warns once with the reason and computes
    Pyro's ELBO instead; it never computes something else.  With ``check``
    (the default) the first batch of each pair is also scored by Pyro's ELBO,
    and a difference raises :class:`~mixvae.errors.ObjectiveMismatch` naming the site.

    :param beta: KL warm-up factor (every latent site's log-density scaled by
        ``beta``, as :class:`~mixvae.inference.objectives.LatentScale` does).
    :param analytic_kl: closed-form KL terms where nothing is enumerated.
    :param check: verify against Pyro's ELBO on the first batch of each pair.
    """

    def __init__(self, *, beta: float = 1.0, analytic_kl: bool = True, check: bool = True) -> None:
        super().__init__(max_plate_nesting=1, num_particles=1)
        self.beta, self.analytic_kl, self.check = beta, analytic_kl, check
        self._seen: weakref.WeakKeyDictionary[Any, weakref.WeakSet] = weakref.WeakKeyDictionary()

    def _first_time(self, model: Any, guide: Any) -> bool:
        partners = self._seen.setdefault(model, weakref.WeakSet())
        if guide in partners:
            return False
        partners.add(guide)
        return True

    def _fallback(self, model: Any, guide: Any, args: tuple, kwargs: dict) -> tuple[ELBO, Any, Any] | None:
        """Pyro's ELBO with the model and guide under the warm-up scale, for a pair the direct
        ELBO does not apply to, else None; the first batch of a pair that it applies to is
        verified against Pyro's ELBO."""
        x, num_data, labels = _batch_arguments(args, kwargs)
        problem = direct_problem(model, guide)
        if problem is None and labels is not None:
            problem = "a labelled minibatch observes the discrete site"
        first = self._first_time(model, guide)
        if problem is None:
            if first and self.check:
                verify_direct(model, guide, x, num_data, beta=self.beta, analytic_kl=self.analytic_kl)
            return None
        if first:
            warnings.warn(f"DirectELBO uses Pyro's ELBO for this pair: {problem}", stacklevel=3)
        elbo = make_elbo(enumerates=has_discrete_site(model, guide), analytic_kl=self.analytic_kl)
        # a program that is not its declaration may enumerate nothing after all
        elbo.strict_enumeration_warning = False
        warm = LatentScale(self.beta)
        return elbo, warm(model), warm(guide)

    def _direct(self, model: Any, guide: Any, args: tuple, kwargs: dict) -> torch.Tensor:
        x, num_data, _ = _batch_arguments(args, kwargs)
        return _within_pyro_contexts(
            model,
            guide,
            lambda: direct_loss(model, guide, x, num_data, beta=self.beta, analytic_kl=self.analytic_kl),
        )

    def differentiable_loss(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        """A differentiable estimate of the negative ELBO (as Pyro's ELBOs give it)."""
        fallback = self._fallback(model, guide, args, kwargs)
        if fallback is not None:
            elbo, warm_model, warm_guide = fallback
            return elbo.differentiable_loss(warm_model, warm_guide, *args, **kwargs)
        return self._direct(model, guide, args, kwargs)

    def _get_trace(self, model: Any, guide: Any, args: tuple, kwargs: dict) -> Any:
        raise NotImplementedError("DirectELBO computes its estimate without tracing the model and guide")

    def loss(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> float:
        """The negative ELBO estimate, as a float."""
        fallback = self._fallback(model, guide, args, kwargs)
        if fallback is not None:
            elbo, warm_model, warm_guide = fallback
            return float(elbo.loss(warm_model, warm_guide, *args, **kwargs))
        with torch.no_grad():
            return float(self._direct(model, guide, args, kwargs))

    def loss_and_grads(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> float:
        """The negative ELBO estimate; its gradients are accumulated in the parameters' ``.grad``."""
        fallback = self._fallback(model, guide, args, kwargs)
        if fallback is not None:
            elbo, warm_model, warm_guide = fallback
            return float(elbo.loss_and_grads(warm_model, warm_guide, *args, **kwargs))
        loss = self._direct(model, guide, args, kwargs)
        if loss.requires_grad:
            loss.backward()
        return float(loss.detach())


def _batch_arguments(args: tuple, kwargs: dict) -> tuple[torch.Tensor, int | None, torch.Tensor | None]:
    names = ("x", "num_data", "labels")
    given = dict(zip(names, args, strict=False))
    unknown = set(kwargs) - set(names)
    if len(args) > len(names) or unknown or set(given) & set(kwargs):
        raise ConfigError(
            "DirectELBO takes the model's arguments (x, num_data=None, labels=None); "
            f"got {len(args)} positional and {sorted(kwargs)} keyword arguments"
        )
    given.update(kwargs)
    if "x" not in given:
        raise ConfigError("DirectELBO needs the minibatch x as the first argument of the model and guide")
    return given["x"], given.get("num_data"), given.get("labels")
