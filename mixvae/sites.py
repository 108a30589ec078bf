r"""Latent sites: what a prior or a guide declares once, and everything that reads the declaration.

A part lists its latent sample sites in order, each with the name of the
method that returns the site's distribution given the values of the sites
before it, and whether it is a discrete site summed out by parallel
enumeration.  The GMM prior, for example, declares

.. code-block:: python

    sites = (Site("y", "y_dist", enumerated=True), Site("z", "z_dist"))

which is the generative story :math:`y \sim p(y)`, :math:`z \mid y \sim p(z \mid y)`.
The Pyro programs (:meth:`Prior.forward <mixvae.models.Prior.forward>`,
:meth:`Guide.sample_latents <mixvae.guides.Guide.sample_latents>`), the
direct ELBO (:class:`~mixvae.inference.DirectELBO`), the exact marginal
:math:`\log p(z)` and the component posterior :math:`p(y \mid z)` are all
read from this one list, so they cannot disagree.

Shapes: continuous sites are vectors (event shape ``(D,)``); values carry
batch dimensions on the left.  An enumerated site takes the values
:math:`0..K-1` in a new leftmost dimension, ``(K,) + (1,) * batch_dims``, as
Pyro's parallel enumeration gives them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pyro.distributions as dist
import torch

from mixvae.errors import ConfigError


@dataclass(frozen=True)
class Site:
    """One latent sample site of a part.

    :param name: the Pyro site name (``"z"``, ``"y"``, ``"w"``, ...).
    :param dist: the name of the part's method that returns the site's
        distribution.  A prior's is called as ``method(values)``, a guide's as
        ``method(h, values)`` with ``h = guide.encode(x)``; ``values`` maps the
        names of the sites declared before it to their values.
    :param enumerated: a discrete site that is summed out by parallel enumeration
        (``infer={"enumerate": "parallel"}``): exactly, never sampled.
    """

    name: str
    dist: str
    enumerated: bool = False


def names(sites: Sequence[Site]) -> tuple[str, ...]:
    """The names of ``sites``, in order."""
    return tuple(s.name for s in sites)


def enumerated_names(sites: Sequence[Site]) -> tuple[str, ...]:
    """The names of the enumerated sites among ``sites``."""
    return tuple(s.name for s in sites if s.enumerated)


def check_declaration(owner: str, sites: Sequence[Site]) -> None:
    """Refuse a declaration the readers below cannot use, naming the part and the fix."""
    if len(set(names(sites))) != len(sites):
        raise ConfigError(f"{owner} declares a site twice: {names(sites)}; give each site its own name")
    if len(enumerated_names(sites)) > 1:
        raise ConfigError(
            f"{owner} declares several enumerated sites {enumerated_names(sites)}; mixvae sums out one "
            "discrete site per part: combine them into one categorical site"
        )


def enumerate_values(fn: dist.TorchDistribution, batch_dims: int) -> torch.Tensor:
    """All values of the discrete distribution ``fn`` in a new leftmost dimension.

    :returns: shape ``(K,) + (1,) * batch_dims``, broadcasting against values of
        batch shape with ``batch_dims`` dimensions, as Pyro's enumeration lays them out.
    """
    if not fn.has_enumerate_support or len(fn.batch_shape) > batch_dims:
        raise ConfigError(
            f"an enumerated site needs a discrete distribution with enumerable support and at most "
            f"{batch_dims} batch dimensions (such as Categorical(logits)), got {type(fn).__name__} with "
            f"batch shape {tuple(fn.batch_shape)}"
        )
    support = fn.enumerate_support(expand=False)  # (K,) + (1,) * len(batch_shape)
    return support.reshape(support.shape[:1] + (1,) * batch_dims)


def batch_dims(values: Mapping[str, torch.Tensor], continuous: Sequence[str]) -> int:
    """Number of batch dimensions of the continuous (vector) values."""
    return max((values[name].dim() - 1 for name in continuous if name in values), default=0)


def log_density(
    sites: Sequence[Site],
    dist_of: Callable[[Site, Mapping[str, torch.Tensor]], dist.TorchDistribution],
    values: Mapping[str, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""The log density of the declared sites at ``values``, an enumerated site summed out.

    Every site present in ``values`` is scored there.  An enumerated site that
    is absent takes all its values at once in a new leftmost dimension, and
    the terms of that site and of every site after it depend on it.

    :param dist_of: ``dist_of(site, values)`` returns the site's distribution.
    :returns: ``(outside, inside)``: the terms that do not depend on an absent
        enumerated site, and those that do, with that site's values in
        dimension 0 (``None`` when no site is summed out).  The density with
        the site summed out is ``outside + inside.logsumexp(0)``; the posterior
        of the site is ``inside.log_softmax(0)``.
    """
    values = dict(values)
    continuous = [s.name for s in sites if not s.enumerated]
    outside: torch.Tensor | float = 0.0
    inside: torch.Tensor | float | None = None
    for site in sites:
        fn = dist_of(site, values)
        if site.name not in values:
            if not site.enumerated:
                raise ConfigError(f"no value given for the continuous site {site.name!r}")
            values[site.name] = enumerate_values(fn, batch_dims(values, continuous))
            inside = 0.0
        term = fn.log_prob(values[site.name])
        if inside is None:
            outside = outside + term
        else:
            inside = inside + term
    out = torch.as_tensor(outside)
    return out, (None if inside is None else torch.as_tensor(inside))


def summed_log_density(
    sites: Sequence[Site],
    dist_of: Callable[[Site, Mapping[str, torch.Tensor]], dist.TorchDistribution],
    values: Mapping[str, torch.Tensor],
) -> torch.Tensor:
    """:func:`log_density` with an absent enumerated site summed out: ``outside + inside.logsumexp(0)``."""
    outside, inside = log_density(sites, dist_of, values)
    return outside if inside is None else outside + inside.logsumexp(0)


def sample_ancestral(
    sites: Sequence[Site],
    dist_of: Callable[[Site, Mapping[str, torch.Tensor]], dist.TorchDistribution],
    n: int,
    fixed: Mapping[str, int] | None = None,
) -> dict[str, torch.Tensor]:
    """``n`` joint draws of the declared sites, each given the ones before it.

    :param fixed: values of discrete sites to use in every draw instead of drawing them
        (e.g. ``{"y": 3}``: samples of one mixture component).
    """
    values: dict[str, torch.Tensor] = {}
    fixed = fixed or {}
    for site in sites:
        fn = dist_of(site, values)
        if site.name in fixed:
            support = fn.enumerate_support(expand=False)
            values[site.name] = torch.full(
                (n,), int(fixed[site.name]), dtype=support.dtype, device=support.device
            )
            continue
        # a site whose distribution does not depend on earlier draws has no batch
        # dimensions yet: draw n of it; the others already carry the n draws
        values[site.name] = fn.sample(torch.Size([n]) if fn.batch_shape == torch.Size() else torch.Size())
    return values
