"""Models: priors over the latent sites plus decoders for ``x``.

``PRIORS`` and ``LIKELIHOODS`` are the registries the CLI and the Python API
share; a new prior is one :class:`Prior` subclass plus one registry line.
"""

from mixvae.models.decoders import LIKELIHOODS, BernoulliDecoder, Decoder, GaussianDecoder
from mixvae.models.logistic import DiscretizedLogisticDecoder

# Import order is registration order, the order `mixvae list` shows.
# isort: off
from mixvae.models.priors import PRIORS, Prior, StandardPrior
from mixvae.models.gmm import FullCovGMMPrior, GMMPrior
from mixvae.models.vampprior import VampPrior
from mixvae.models.dilokthanakul import DilokthanakulPrior
from mixvae.models.posthoc import PosthocGMMPrior

# isort: on
from mixvae.models.vae import VAE

__all__ = [
    "LIKELIHOODS",
    "PRIORS",
    "VAE",
    "BernoulliDecoder",
    "Decoder",
    "DilokthanakulPrior",
    "DiscretizedLogisticDecoder",
    "FullCovGMMPrior",
    "GMMPrior",
    "GaussianDecoder",
    "PosthocGMMPrior",
    "Prior",
    "StandardPrior",
    "VampPrior",
]
