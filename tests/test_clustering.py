"""Cluster assignment is the exact posterior of the discrete component."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pyro import poutine

from mixvae import TrainConfig, build
from mixvae.errors import ConfigError
from mixvae.evaluation import clustering_scores, component_posterior
from mixvae.inference import make_elbo


def test_model_enumerated_posterior_matches_pyro_marginals(small_digits):
    """For gmm x gaussian, p(y | z) equals what TraceEnum_ELBO.compute_marginals enumerates."""
    model, guide = build(
        TrainConfig(prior="gmm", guide="gaussian", latent_dim=3, components=4, hidden=(16,)), 64
    )
    x = small_digits.test_x[:6]
    trace = poutine.trace(guide).get_trace(x)
    marginals = make_elbo().compute_marginals(model, poutine.replay(guide, trace=trace), x)
    ours = model.prior.component_log_posterior({"z": trace.nodes["z"]["value"]}).exp()
    assert torch.allclose(marginals["y"].probs.reshape(ours.shape), ours, atol=1e-5)


def test_categorical_guide_posterior_is_q_y_given_x(small_digits):
    model, guide = build(TrainConfig(latent_dim=3, components=4, hidden=(16,)), 64)
    x = small_digits.test_x[:6]
    probs = component_posterior(model, guide, x)
    assert torch.allclose(probs, guide.component_logits(x).softmax(-1))
    assert torch.allclose(probs.sum(-1), torch.ones(6))


def test_no_component_to_cluster_is_an_error(small_digits):
    model, guide = build(TrainConfig(prior="standard", guide="gaussian", hidden=(8,)), 64)
    with pytest.raises(ConfigError, match="no discrete component"):
        component_posterior(model, guide, small_digits.test_x[:3])


def test_clustering_scores_on_known_assignments():
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    perfect = np.array([2, 2, 2, 0, 0, 0, 1, 1])  # a relabelling
    s = clustering_scores(perfect, labels)
    assert s["acc_hungarian"] == 1.0 and s["nmi"] == pytest.approx(1.0) and s["ari"] == pytest.approx(1.0)
    # four clusters for three classes: majority mapping can reach 1, one-to-one cannot
    split = np.array([0, 0, 3, 1, 1, 1, 2, 2])
    s = clustering_scores(split, labels)
    assert s["acc_majority"] == 1.0
    assert s["acc_hungarian"] == pytest.approx(7 / 8)
    assert s["n_clusters_used"] == 4
