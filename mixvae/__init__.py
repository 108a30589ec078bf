"""mixvae: variational autoencoders whose priors and guides are swappable parts.

Every model (prior + decoder) pairs with every guide (encoder) under one
training loop (``TraceEnum_ELBO(max_plate_nesting=1)``, or Pyro's
``TraceMeanField_ELBO`` for pairs with nothing to enumerate); discrete mixture
components are summed out exactly by enumeration.

The rooms follow the data: :mod:`mixvae.data` -> :mod:`mixvae.build` (model
and guide from :mod:`mixvae.models`, :mod:`mixvae.guides` and the network bodies of
:mod:`mixvae.networks`) ->
:mod:`mixvae.inference` (objectives, training) -> :mod:`mixvae.runs` (the run
folder) -> :mod:`mixvae.evaluation` -> :mod:`mixvae.figures`.  See
``docs/architecture.md``.
"""

__version__ = "0.1.0"

from mixvae.build import build
from mixvae.config import TrainConfig
from mixvae.data import DATASETS, load_dataset
from mixvae.guides import GUIDES
from mixvae.models import LIKELIHOODS, PRIORS, VAE
from mixvae.networks import NETWORKS
from mixvae.runs import Run, load_model, load_run, save_model

# isort: off
from mixvae.inference import resume, train
from mixvae.evaluation import evaluate_run

# isort: on

__all__ = [
    "DATASETS",
    "GUIDES",
    "LIKELIHOODS",
    "NETWORKS",
    "PRIORS",
    "VAE",
    "Run",
    "TrainConfig",
    "__version__",
    "build",
    "evaluate_run",
    "load_dataset",
    "load_model",
    "load_run",
    "resume",
    "save_model",
    "train",
]

# Last, once every built-in part is registered (a plugin may import any of mixvae):
# the installed plugins, entry points of the group "mixvae.plugins".  One that fails
# to import is a one-line PluginWarning; mixvae.plugins runs this once per process.
from mixvae.plugins import load_entry_point_plugins

load_entry_point_plugins()
