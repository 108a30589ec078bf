"""Cluster assignment from the discrete component, and clustering scores."""

from __future__ import annotations

import numpy as np
import pyro
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from mixvae.errors import ConfigError
from mixvae.guides import Guide
from mixvae.models import VAE
from mixvae.rng import seeded


@torch.no_grad()
def component_posterior(
    model: VAE,
    guide: Guide,
    x: torch.Tensor,
    *,
    num_samples: int = 16,
    batch_size: int = 1000,
    seed: int = 0,
) -> torch.Tensor:
    r"""Posterior probabilities of the discrete component for each datapoint, shape (N, K).

    * A guide that provides ``y`` (``categorical``): :math:`q(y \mid x)`, exact.
    * A model-enumerated ``y`` (e.g. ``gmm`` with a ``gaussian`` guide): the
      posterior that enumeration computes, :math:`p(y \mid z)` (or
      :math:`p(c \mid w, z)`), exact given the continuous latents and averaged
      over ``num_samples`` draws of them from the guide.
    """
    if guide.discrete_site is None and model.prior.discrete_site is None:
        raise ConfigError(
            f"prior {model.prior.name!r} with guide {guide.name!r} has no discrete component "
            "to cluster with; use a mixture prior such as gmm"
        )
    out = []
    # Scoped parameter store: calling the encoder must not register its
    # parameters in the caller's global store.
    with seeded(seed, x.device), pyro.get_param_store().scope():
        for batch in x.split(batch_size):
            if guide.discrete_site is not None:
                out.append(guide.component_logits(batch).softmax(-1))
            else:
                latents = {k: q.sample((num_samples,)) for k, q in guide.q_latents(batch).items()}
                out.append(model.prior.component_log_posterior(latents).exp().mean(0))
    return torch.cat(out)


def cluster_assignments(model: VAE, guide: Guide, x: torch.Tensor, **kwargs) -> torch.Tensor:
    """The most probable component of each datapoint (see :func:`component_posterior`)."""
    return component_posterior(model, guide, x, **kwargs).argmax(-1)


def clustering_scores(
    clusters: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor
) -> dict[str, float]:
    """Unsupervised clustering scores against true labels.

    * ``acc_hungarian``: accuracy under the best one-to-one cluster -> label map
      (:func:`scipy.optimize.linear_sum_assignment`); clusters left without a
      label count as wrong.
    * ``acc_majority``: accuracy when each cluster takes its majority label
      (many-to-one, as GMVAE papers report when K exceeds the class count).
    * ``nmi``, ``ari``: scikit-learn's normalised mutual information and
      adjusted Rand index.
    * ``n_clusters_used``: number of distinct clusters assigned.
    """
    c = np.asarray(clusters).astype(int).ravel()
    y = np.asarray(labels).astype(int).ravel()
    if c.shape != y.shape:
        raise ValueError(f"{len(c)} cluster assignments for {len(y)} labels")
    counts = np.zeros((c.max() + 1, y.max() + 1), dtype=np.int64)
    np.add.at(counts, (c, y), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return {
        "acc_hungarian": float(counts[rows, cols].sum() / len(c)),
        "acc_majority": float(counts.max(axis=1).sum() / len(c)),
        "nmi": float(normalized_mutual_info_score(y, c)),
        "ari": float(adjusted_rand_score(y, c)),
        "n_clusters_used": len(np.unique(c)),
    }
