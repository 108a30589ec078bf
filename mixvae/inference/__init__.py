"""Inference: the training loop, the objective, clustering and checkpoints."""

from mixvae.inference.aggregate import active_units, elbo_surgery, mmd_test, sample_aggregate_posterior
from mixvae.inference.checkpoint import load_checkpoint, save_checkpoint
from mixvae.inference.clustering import cluster_assignments, clustering_scores, component_posterior
from mixvae.inference.evaluation import (
    evaluate_run,
    importance_sampling,
    log_likelihood,
    pareto_khat,
    to_inference_data,
)
from mixvae.inference.objectives import LatentScale, evaluate_elbo, make_elbo
from mixvae.inference.pairs import build, check_pair, compatible_guides, compatible_priors
from mixvae.inference.train import Run, adam, load_run, resume, summarize, train

__all__ = [
    "LatentScale",
    "Run",
    "active_units",
    "adam",
    "build",
    "check_pair",
    "cluster_assignments",
    "clustering_scores",
    "compatible_guides",
    "compatible_priors",
    "component_posterior",
    "elbo_surgery",
    "evaluate_elbo",
    "evaluate_run",
    "importance_sampling",
    "load_checkpoint",
    "load_run",
    "log_likelihood",
    "make_elbo",
    "mmd_test",
    "pareto_khat",
    "resume",
    "sample_aggregate_posterior",
    "save_checkpoint",
    "summarize",
    "to_inference_data",
    "train",
]
