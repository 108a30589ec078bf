"""Building a model and a guide from a configuration, and checking the pair.

A pair is valid when the guide provides a subset of the prior's latent sites,
and every latent site it does not provide is one the model sums out by
enumeration.  A site that exists only in the guide would not be a latent of
the model at all: for a discrete one, the objective would score
``log q(k) + log q(z | k)`` instead of ``log q(z)`` and inflate the "bound" by
up to log K.
"""

from __future__ import annotations

from mixvae.config import TrainConfig
from mixvae.errors import IncompatiblePairError
from mixvae.guides import GUIDES, Guide
from mixvae.models import LIKELIHOODS, PRIORS, VAE, Prior


def pair_problem(prior: type[Prior] | Prior, guide: type[Guide] | Guide) -> str | None:
    """Why a prior and a guide (classes or instances) cannot be paired, or ``None``."""
    extra = [s for s in guide.provides if s not in prior.latent_sites]
    if extra:
        why = (
            " (a discrete site only the guide has would inflate the ELBO by up to log K)"
            if guide.discrete_site in extra
            else ""
        )
        return f"guide {guide.name!r} provides {extra} that prior {prior.name!r} does not have{why}"
    missing = [s for s in prior.latent_sites if s not in guide.provides and s not in prior.enumerated_sites]
    if missing:
        return (
            f"prior {prior.name!r} has the continuous latent sites {missing} that guide "
            f"{guide.name!r} does not provide"
        )
    return None


def compatible_priors(guide_name: str) -> list[str]:
    """The priors a registered guide can pair with."""
    guide = GUIDES[guide_name]
    return [name for name, prior in PRIORS.items() if pair_problem(prior, guide) is None]


def compatible_guides(prior_name: str) -> list[str]:
    """The guides a registered prior can pair with."""
    prior = PRIORS[prior_name]
    return [name for name, guide in GUIDES.items() if pair_problem(prior, guide) is None]


def _refuse(problem: str, prior_name: str, guide_name: str) -> IncompatiblePairError:
    return IncompatiblePairError(
        f"{problem}; pair prior {prior_name!r} with one of the guides "
        f"{', '.join(compatible_guides(prior_name)) or '(none)'}, or guide {guide_name!r} with one of "
        f"the priors {', '.join(compatible_priors(guide_name)) or '(none)'}"
    )


def check_pair(model: VAE, guide: Guide) -> None:
    """Refuse a pair whose ELBO would not be a bound on log p(x) (see the module doc)."""
    prior = model.prior
    problem = pair_problem(prior, guide)
    if problem:
        raise _refuse(problem, prior.name, guide.name)
    site = guide.discrete_site
    if site is not None and prior.num_components != guide.num_components:
        raise IncompatiblePairError(
            f"guide {guide.name!r} has {guide.num_components} values of {site!r} but prior "
            f"{prior.name!r} has {prior.num_components}; build both with the same --components"
        )
    if guide.data_dim != model.decoder.data_dim:
        raise IncompatiblePairError(
            f"guide {guide.name!r} encodes {guide.data_dim} columns but the decoder makes "
            f"{model.decoder.data_dim}; build both for the same data"
        )


def check_names(config: TrainConfig) -> None:
    """Check the names and the pairing of a configuration before any work is done."""
    for registry, name in ((PRIORS, config.prior), (GUIDES, config.guide), (LIKELIHOODS, config.likelihood)):
        registry[name]  # raises UnknownNameError listing the valid names
    problem = pair_problem(PRIORS[config.prior], GUIDES[config.guide])
    if problem:
        raise _refuse(problem, config.prior, config.guide)


def build(config: TrainConfig, data_dim: int) -> tuple[VAE, Guide]:
    """The model (prior + decoder) and guide a configuration asks for, checked as a pair."""
    config.validate()
    check_names(config)
    guide = GUIDES[config.guide].from_config(config, data_dim)
    prior = PRIORS[config.prior].from_config(config, data_dim, guide)
    decoder = LIKELIHOODS[config.likelihood].from_config(config, data_dim)
    model = VAE(prior, decoder)
    check_pair(model, guide)
    return model, guide
