"""Building a model and a guide from a configuration, and checking the pair."""

from __future__ import annotations

from mixvae.config import TrainConfig
from mixvae.errors import IncompatiblePairError
from mixvae.guides import GUIDES, Guide
from mixvae.models import LIKELIHOODS, PRIORS, VAE


def check_pair(model: VAE, guide: Guide) -> None:
    """Refuse a pair whose ELBO would not be a bound on log p(x).

    A guide that provides a discrete site must provide the model's own
    discrete site, with the same number of values: a site that existed only
    in the guide would be scored ``log q(k) + log q(z | k)`` instead of
    ``log q(z)`` and inflate the "bound" by up to log K.
    """
    prior = model.prior
    site = guide.discrete_site
    if site is None:
        return
    if prior.discrete_site != site:
        fitting = [n for n, cls in PRIORS.items() if cls.discrete_site == site]
        raise IncompatiblePairError(
            f"guide {guide.name!r} provides a discrete site {site!r} that prior {prior.name!r} "
            f"does not have (it would inflate the ELBO by up to log K); pair {guide.name!r} "
            f"with a prior that has {site!r} ({', '.join(fitting)}), or use a guide without it "
            "(gaussian, mixture)"
        )
    if prior.num_components != guide.num_components:
        raise IncompatiblePairError(
            f"guide {guide.name!r} has {guide.num_components} values of {site!r} but prior "
            f"{prior.name!r} has {prior.num_components}; build both with the same --components"
        )


def check_names(config: TrainConfig) -> None:
    """Check the names and the pairing of a configuration before any work is done."""
    for registry, name in ((PRIORS, config.prior), (GUIDES, config.guide), (LIKELIHOODS, config.likelihood)):
        registry[name]  # raises UnknownNameError listing the valid names
    if config.prior not in compatible_priors(config.guide):
        site = GUIDES[config.guide].discrete_site
        raise IncompatiblePairError(
            f"guide {config.guide!r} provides a discrete site {site!r} that prior {config.prior!r} "
            f"does not have (it would inflate the ELBO by up to log K); pair {config.guide!r} with "
            f"one of the priors {', '.join(compatible_priors(config.guide))}, or use a guide "
            "without it (gaussian, mixture)"
        )


def compatible_priors(guide_name: str) -> list[str]:
    """The priors a registered guide can pair with."""
    site = GUIDES[guide_name].discrete_site
    return [n for n, cls in PRIORS.items() if site is None or cls.discrete_site == site]


def build(config: TrainConfig, data_dim: int) -> tuple[VAE, Guide]:
    """The model (prior + decoder) and guide a configuration asks for, checked as a pair."""
    config.validate()
    guide_cls, prior_cls, decoder_cls = (
        GUIDES[config.guide],
        PRIORS[config.prior],
        LIKELIHOODS[config.likelihood],
    )
    guide = guide_cls.from_config(config, data_dim)
    prior = prior_cls.from_config(config, data_dim, guide)
    model = VAE(prior, decoder_cls(config.latent_dim, data_dim, config.hidden))
    check_pair(model, guide)
    return model, guide
