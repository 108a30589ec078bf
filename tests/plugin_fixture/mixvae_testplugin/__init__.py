"""A tiny mixvae plugin for tests/test_plugins.py: one prior and one guide, registered on import.

The parts only change class attributes and constructor arguments of built-in
parts, so that they follow whatever the base classes do.
"""

from mixvae.guides import GUIDES, GaussianGuide
from mixvae.models import PRIORS, GMMPrior


@PRIORS.register("wide-gmm")
class WideGMMPrior(GMMPrior):
    """The gmm prior with its initial component means spread three times wider."""

    story = "y ~ Cat(pi), z | y ~ N(mu_y, diag sigma_y^2), initial means 3x wider (test plugin)"

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("init_spread", 3.0)
        super().__init__(*args, **kwargs)


@GUIDES.register("gaussian-copy")
class GaussianCopyGuide(GaussianGuide):
    """The gaussian guide under another name."""

    story = "q(z|x) = N(mu(x), diag sigma(x)^2), the gaussian guide again (test plugin)"
