"""The discrete component of a trained pair through Pyro's :func:`~pyro.infer.infer_discrete`.

Pyro's tutorial pattern, ``infer_discrete(poutine.replay(model, trace=guide_trace))``,
fails for a model-enumerated site downstream of a replayed continuous site
("Error while packing tensors at site 'z'", also for a five-line model written
in plain Pyro 1.9: the replay hands the guide's ``infer`` dict to the model's
site).  Conditioning the model on the continuous latents instead works, and is
what :func:`infer_components` does::

    latents = {name: q.sample() for name, q in guide.q_latents(x).items()}
    sampler = infer_discrete(poutine.condition(model, data=latents),
                             first_available_dim=-2, temperature=0)
    y = poutine.trace(sampler).get_trace(x).nodes["y"]["value"]
"""

from __future__ import annotations

from collections.abc import Mapping

import pyro
import torch
from pyro import poutine
from pyro.infer import infer_discrete

from mixvae.errors import ConfigError
from mixvae.guides import Guide
from mixvae.models import VAE


@torch.no_grad()
def infer_components(
    model: VAE,
    guide: Guide,
    x: torch.Tensor,
    *,
    temperature: int = 0,
    latents: Mapping[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    r"""The model's discrete component of each row of ``x`` given its continuous latents, shape (B,).

    The continuous latents (``z``; ``w`` and ``z`` for ``dilokthanakul``) are
    one draw from the guide's :math:`q(\cdot \mid x)` (the marginal over
    ``y`` for the ``categorical`` guide), or ``latents`` when given; the
    component is then read from the model's exact posterior
    :math:`p(y \mid z)` by Pyro's :func:`~pyro.infer.infer_discrete`:
    ``temperature=0`` gives the most probable component (MAP), ``1`` a draw.
    Works for every pair whose prior has a discrete site, whichever guide.

    For the posterior averaged over several draws of the latents (what
    evaluation clusters with) see :func:`mixvae.evaluation.component_posterior`.
    """
    site = model.prior.discrete_site
    if site is None:
        raise ConfigError(
            f"prior {model.prior.name!r} has no discrete component to infer; use a mixture prior such as gmm"
        )
    if temperature not in (0, 1):
        raise ConfigError(f"temperature must be 0 (MAP) or 1 (a draw), got {temperature!r}")
    with pyro.get_param_store().scope():  # leave the caller's parameter store as it was
        if latents is None:
            latents = {name: q.sample() for name, q in guide.q_latents(x).items()}
        conditioned = poutine.condition(model, data=dict(latents))
        sampler = infer_discrete(conditioned, first_available_dim=-2, temperature=temperature)
        trace = poutine.trace(sampler).get_trace(x)
    return trace.nodes[site]["value"]
