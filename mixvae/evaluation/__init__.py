"""Evaluation of trained runs: likelihood, aggregate posterior, clustering, sampling, sample quality.

Each piece works on a model and a guide; :func:`evaluate_run` runs all of them
on a run folder and writes ``evaluation.json``.
"""

from mixvae.evaluation.aggregate import active_units, elbo_surgery, mmd_test, sample_aggregate_posterior
from mixvae.evaluation.clustering import cluster_assignments, clustering_scores, component_posterior
from mixvae.evaluation.evaluate import clustering_baselines, evaluate_run, to_inference_data
from mixvae.evaluation.likelihood import KHAT_THRESHOLD, importance_sampling, log_likelihood, pareto_khat
from mixvae.evaluation.posthoc import PosthocGMM, ensure_posthoc_gmm, fit_posthoc_gmm
from mixvae.evaluation.sampling import SOURCES, sample_images, sample_latents
from mixvae.evaluation.summary import summarize

__all__ = [
    "KHAT_THRESHOLD",
    "SOURCES",
    "PosthocGMM",
    "active_units",
    "cluster_assignments",
    "clustering_baselines",
    "clustering_scores",
    "component_posterior",
    "elbo_surgery",
    "ensure_posthoc_gmm",
    "evaluate_run",
    "fit_posthoc_gmm",
    "importance_sampling",
    "log_likelihood",
    "mmd_test",
    "pareto_khat",
    "sample_aggregate_posterior",
    "sample_images",
    "sample_latents",
    "summarize",
    "to_inference_data",
]
