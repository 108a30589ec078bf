r"""The importance-weighted bound of Burda et al. (2016), with the discrete components summed out exactly.

For K draws :math:`z_k \sim q(z \mid x)` of the guide's continuous latents,

.. math::

    \log w_k = \log p(x \mid z_k) + \log p(z_k) - \log q(z_k \mid x), \qquad
    \mathcal{L}_K(x) = \log \frac{1}{K} \sum_{k=1}^{K} w_k \le \log p(x),

where :math:`\log p(z)` is the prior's declared density with its discrete
site summed out (``y`` of ``gmm``, ``c`` of ``dilokthanakul``: a log-sum-exp
over components inside every weight) and :math:`\log q(z \mid x)` the guide's
exact marginal (for the ``categorical`` guide the mixture
:math:`\sum_y q(y \mid x)\, q(z \mid x, y)`, drawn pathwise).  Pyro's
:class:`~pyro.infer.RenyiELBO` cannot compute this for mixture pairs: it
refuses an enumerated guide and draws a model-enumerated ``y`` from the prior.
:math:`\mathcal{L}_K` rises with K towards :math:`\log p(x)`; with K = 1 it is
the ELBO of the marginal densities (for a pair with a discrete site, the
collapsed ELBO, which is at least the enumerated one).

:func:`log_weights` is the one place the weights are written: the training
objective (:func:`iwae_loss`, :class:`IWAE_ELBO`, ``--objective iwae
--particles K``) and the likelihood evaluation
(:func:`mixvae.evaluation.importance_sampling`) both call it.  A part's own
Pyro factors beyond its declared densities (``dilokthanakul``'s free-bits
clamp) are not part of the bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from pyro.infer import ELBO

from mixvae.errors import ConfigError
from mixvae.guides import Guide
from mixvae.inference.direct import _batch_arguments, _within_pyro_contexts
from mixvae.models import VAE
from mixvae.nn import check_batch

Latents = Mapping[str, torch.Tensor]


def log_q(qs: Mapping[str, torch.distributions.Distribution], latents: Latents) -> torch.Tensor:
    """log q of the continuous latents, the sites being independent given x.

    Same as :meth:`~mixvae.guides.Guide.log_q`, on distributions already built,
    so that the encoder runs once per batch and not once per chunk of draws.
    """
    return sum(q.log_prob(latents[k]) for k, q in qs.items())


def log_weights(
    model: VAE,
    qs: Mapping[str, torch.distributions.Distribution],
    x: torch.Tensor,
    num_samples: int,
    *,
    reparameterized: bool = True,
    prior_log_prob: Callable[[Latents], torch.Tensor] | None = None,
    beta: float = 1.0,
) -> torch.Tensor:
    r"""The log importance weights of ``num_samples`` draws per row of ``x``, shape (S, B).

    :param qs: the guide's distributions of its continuous latents given ``x``
        (:meth:`~mixvae.guides.Guide.q_latents`), batch shape (B,).
    :param reparameterized: draw with ``rsample`` (gradients flow through the
        draws, for training) or ``sample`` (evaluation).
    :param prior_log_prob: a density of the latents to use instead of
        ``model.prior.log_prob`` (a post-hoc GMM).
    :param beta: KL warm-up: :math:`\log p(x \mid z) + \beta\,[\log p(z) - \log q(z \mid x)]`
        (the weights of the bound at ``beta = 1``).
    """
    shape = torch.Size([num_samples])
    if reparameterized:
        missing = [k for k, q in qs.items() if not q.has_rsample]
        if missing:
            raise ConfigError(
                f"the guide's q of {missing} has no pathwise sample (rsample), which the importance-weighted "
                "objective needs; train this guide with --objective auto"
            )
        latents = {k: q.rsample(shape) for k, q in qs.items()}
    else:
        latents = {k: q.sample(shape) for k, q in qs.items()}
    log_prior = model.prior.log_prob if prior_log_prob is None else prior_log_prob
    log_lik = model.decoder.log_likelihood(latents["z"], x)
    return log_lik + beta * (log_prior(latents) - log_q(qs, latents))


def iwae_bound(log_w: torch.Tensor) -> torch.Tensor:
    r""":math:`\log \frac{1}{K} \sum_k w_k` over the first dimension of the log weights (K, B) -> (B,)."""
    return log_w.logsumexp(0) - math.log(log_w.shape[0])


def iwae_loss(
    model: VAE,
    guide: Guide,
    x: torch.Tensor,
    num_data: int | None,
    particles: int,
    *,
    beta: float = 1.0,
) -> torch.Tensor:
    """The negative importance-weighted bound of the minibatch ``x``, scaled to ``num_data`` points."""
    check_batch(x, model.decoder.data_shape)
    bound = iwae_bound(log_weights(model, guide.q_latents(x), x, particles, beta=beta))
    scale = 1.0 if num_data is None else num_data / len(x)
    return -scale * bound.sum()


class IWAE_ELBO(ELBO):
    r"""The importance-weighted bound as a :class:`pyro.infer.ELBO`, for any ``SVI`` loop::

        svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), IWAE_ELBO(num_particles=50))
        svi.step(x, num_data=len(data))

    Its loss is :math:`-\sum_x \mathcal{L}_K(x)` scaled to ``num_data``, for
    every mixvae pair (see the module doc); the gradient is the pathwise
    gradient of the bound (Burda et al.).

    :param num_particles: K, the importance samples per datapoint.
    :param beta: KL warm-up factor inside each weight.
    """

    def __init__(self, num_particles: int = 5, *, beta: float = 1.0) -> None:
        if not isinstance(num_particles, int) or num_particles < 1:
            raise ConfigError(f"num_particles must be a positive integer, got {num_particles!r}")
        super().__init__(max_plate_nesting=1, num_particles=num_particles)
        self.beta = beta

    def _loss(self, model: Any, guide: Any, args: tuple, kwargs: dict) -> torch.Tensor:
        if not isinstance(model, VAE) or not isinstance(guide, Guide):
            raise ConfigError("IWAE_ELBO needs a mixvae VAE and Guide (it reads their declared densities)")
        x, num_data, labels = _batch_arguments(args, kwargs)
        if labels is not None:
            raise ConfigError("IWAE_ELBO scores unlabelled minibatches; score labelled ones with DirectELBO")
        return _within_pyro_contexts(
            model, guide, lambda: iwae_loss(model, guide, x, num_data, self.num_particles, beta=self.beta)
        )

    def differentiable_loss(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._loss(model, guide, args, kwargs)

    def loss(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> float:
        with torch.no_grad():
            return float(self._loss(model, guide, args, kwargs))

    def loss_and_grads(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> float:
        loss = self._loss(model, guide, args, kwargs)
        if loss.requires_grad:
            loss.backward()
        return float(loss.detach())

    def _get_trace(self, model: Any, guide: Any, args: tuple, kwargs: dict) -> Any:
        raise NotImplementedError("IWAE_ELBO computes its estimate without tracing the model and guide")
