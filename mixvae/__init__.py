"""mixvae: variational autoencoders whose priors and guides are swappable parts.

Every model (prior + decoder) pairs with every guide (encoder) under one
training loop (``TraceEnum_ELBO(max_plate_nesting=1)``, or Pyro's
``TraceMeanField_ELBO`` for pairs with nothing to enumerate); discrete mixture
components are summed out exactly by enumeration.
"""

__version__ = "0.1.0"

from mixvae.config import TrainConfig
from mixvae.data import DATASETS, load_dataset
from mixvae.guides import GUIDES
from mixvae.inference import build, load_run, train
from mixvae.models import PRIORS, VAE

__all__ = [
    "DATASETS",
    "GUIDES",
    "PRIORS",
    "VAE",
    "TrainConfig",
    "__version__",
    "build",
    "load_dataset",
    "load_run",
    "train",
]
