"""Inference: the training loop, the objective, clustering and checkpoints."""

from mixvae.inference.checkpoint import load_checkpoint, save_checkpoint
from mixvae.inference.clustering import cluster_assignments, clustering_scores, component_posterior
from mixvae.inference.objectives import LatentScale, evaluate_elbo, make_elbo
from mixvae.inference.pairs import build, check_pair, compatible_guides, compatible_priors
from mixvae.inference.train import Run, load_run, resume, summarize, train

__all__ = [
    "LatentScale",
    "Run",
    "build",
    "check_pair",
    "cluster_assignments",
    "clustering_scores",
    "compatible_guides",
    "compatible_priors",
    "component_posterior",
    "evaluate_elbo",
    "load_checkpoint",
    "load_run",
    "make_elbo",
    "resume",
    "save_checkpoint",
    "summarize",
    "train",
]
