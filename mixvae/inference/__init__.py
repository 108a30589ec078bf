"""Inference: the objectives (Pyro's ELBOs and the direct ELBO), KL warm-up and the training loop.

Lightning (:mod:`mixvae.inference.lightning`) is a thin adapter over the same
loss and schedule.  Names that lived here in mixvae 0.1 (``build``,
``load_run``, ``evaluate_run``, the clustering and aggregate-posterior
functions, ...) are still importable from here; their homes are
:mod:`mixvae.build`, :mod:`mixvae.runs` and :mod:`mixvae.evaluation`.
"""

from __future__ import annotations

import importlib
from typing import Any

from mixvae.inference.direct import DirectELBO, direct_loss, direct_problem, verify_direct
from mixvae.inference.discrete import infer_components
from mixvae.inference.iwae import IWAE_ELBO, iwae_bound, iwae_loss, log_weights
from mixvae.inference.loss import TrainingLoss

# objectives first: mixvae.evaluation imports them while the training loop imports evaluation
from mixvae.inference.objectives import LatentScale, evaluate_elbo, make_elbo
from mixvae.inference.optim import adam
from mixvae.inference.resume import resume
from mixvae.inference.train import train

#: names kept importable from ``mixvae.inference`` for code written against mixvae 0.1
_MOVED = {
    "build": "mixvae.build",
    "check_pair": "mixvae.build",
    "compatible_guides": "mixvae.build",
    "compatible_priors": "mixvae.build",
    "Run": "mixvae.runs",
    "load_run": "mixvae.runs",
    "load_checkpoint": "mixvae.runs",
    "save_checkpoint": "mixvae.runs",
    "summarize": "mixvae.evaluation",
    "evaluate_run": "mixvae.evaluation",
    "importance_sampling": "mixvae.evaluation",
    "log_likelihood": "mixvae.evaluation",
    "pareto_khat": "mixvae.evaluation",
    "to_inference_data": "mixvae.evaluation",
    "active_units": "mixvae.evaluation",
    "elbo_surgery": "mixvae.evaluation",
    "mmd_test": "mixvae.evaluation",
    "sample_aggregate_posterior": "mixvae.evaluation",
    "cluster_assignments": "mixvae.evaluation",
    "clustering_scores": "mixvae.evaluation",
    "component_posterior": "mixvae.evaluation",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'mixvae.inference' has no attribute {name!r}")


__all__ = [
    "IWAE_ELBO",
    "DirectELBO",
    "LatentScale",
    "TrainingLoss",
    "adam",
    "direct_loss",
    "direct_problem",
    "evaluate_elbo",
    "infer_components",
    "iwae_bound",
    "iwae_loss",
    "log_weights",
    "make_elbo",
    "resume",
    "train",
    "verify_direct",
]
