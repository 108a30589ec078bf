"""Models: priors over the latent sites plus decoders for ``x``.

``PRIORS`` and ``LIKELIHOODS`` are the registries the CLI and the Python API
share; a new prior is one :class:`Prior` subclass plus one registry line.
"""

from mixvae.models.decoders import LIKELIHOODS, BernoulliDecoder, Decoder, GaussianDecoder
from mixvae.models.priors import (
    PRIORS,
    DilokthanakulPrior,
    FullCovGMMPrior,
    GMMPrior,
    PosthocGMMPrior,
    Prior,
    StandardPrior,
    VampPrior,
)
from mixvae.models.vae import VAE

__all__ = [
    "LIKELIHOODS",
    "PRIORS",
    "VAE",
    "BernoulliDecoder",
    "Decoder",
    "DilokthanakulPrior",
    "FullCovGMMPrior",
    "GMMPrior",
    "GaussianDecoder",
    "PosthocGMMPrior",
    "Prior",
    "StandardPrior",
    "VampPrior",
]
