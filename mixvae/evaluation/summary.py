"""The end-of-training summary of a run (``summary.json``)."""

from __future__ import annotations

from typing import Any

from mixvae.data import Dataset, evaluation_data
from mixvae.evaluation.clustering import cluster_assignments, clustering_scores
from mixvae.inference.objectives import evaluate_elbo, has_discrete_site
from mixvae.runs.folder import Run


def summarize(run: Run, data: Dataset, seconds: float | None = None) -> dict[str, Any]:
    """Final ELBOs (nats per datapoint, beta = 1) and, where possible, clustering scores."""
    config, model, guide = run.config, run.model, run.guide
    device = next(model.parameters()).device
    test_x = evaluation_data(data.test_x.to(device), config.binarize)
    summary: dict[str, Any] = {
        "prior": config.prior,
        "guide": config.guide,
        "dataset": data.name,
        "epochs": run.epoch,
        "num_train": len(data.train_x),
        "num_heldout": len(data.test_x),
        "train_elbo": evaluate_elbo(
            model,
            guide,
            evaluation_data(data.train_x.to(device), config.binarize),
            batch_size=config.eval_batch_size,
        ),
        "heldout_elbo": evaluate_elbo(model, guide, test_x, batch_size=config.eval_batch_size),
    }
    if seconds is not None:
        summary["train_seconds"] = seconds
    if data.test_y is not None and has_discrete_site(model, guide):
        clusters = cluster_assignments(model, guide, test_x, batch_size=config.eval_batch_size).cpu()
        summary["clustering"] = {"split": "heldout", **clustering_scores(clusters, data.test_y)}
        if config.labels_per_class is not None:
            # The labels fixed the meaning of each component: no matching needed.
            summary["classification_accuracy"] = float((clusters == data.test_y).float().mean())
            summary["labels_used"] = config.labels_per_class * int(data.num_classes or 0)
    return summary
