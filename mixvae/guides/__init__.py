"""Guides: amortised encoders q(z | x), some also providing the model's ``y``.

``GUIDES`` is the registry the CLI and the Python API share; a new guide is
one :class:`Guide` subclass plus one registry line.
"""

# Import order is registration order, the order `mixvae list` shows.
# isort: off
from mixvae.guides.base import GUIDES, Guide
from mixvae.guides.gaussian import GaussianGuide
from mixvae.guides.mixture import MixtureGuide
from mixvae.guides.categorical import CategoricalGuide
from mixvae.guides.dilokthanakul import DilokthanakulGuide

# isort: on
from mixvae.distributions import UnivariateMixtureOfNormals, diag_normal_mixture  # moved; kept importable

__all__ = [
    "GUIDES",
    "CategoricalGuide",
    "DilokthanakulGuide",
    "GaussianGuide",
    "Guide",
    "MixtureGuide",
    "UnivariateMixtureOfNormals",
    "diag_normal_mixture",
]
