"""The priors and guides beyond the core: VampPrior, Dilokthanakul GMVAE, post-hoc GMM."""

from __future__ import annotations

import math

import pytest
import torch

from mixvae import TrainConfig, build


@pytest.mark.parametrize("guide", ["gaussian", "mixture"])
def test_vampprior_density_is_the_log_mean_exp_over_pseudo_inputs(guide):
    config = TrainConfig(
        prior="vampprior", guide=guide, latent_dim=3, hidden=(16,), pseudo_inputs=7, guide_components=2
    )
    model, guide_obj = build(config, 64)
    z = torch.randn(5, 3)
    u = model.prior.pseudo_inputs()
    assert u.shape == (7, 64) and (u >= 0).all() and (u <= 1).all()
    per_input = torch.stack([guide_obj.q_z(u[k : k + 1]).log_prob(z) for k in range(7)])  # (K, 5)
    brute = torch.logsumexp(per_input, 0) - math.log(7)
    assert torch.allclose(model.prior.marginal().log_prob(z), brute, atol=1e-5)


def test_vampprior_parameters_are_not_duplicated():
    model, guide = build(TrainConfig(prior="vampprior", guide="gaussian", hidden=(8,), pseudo_inputs=4), 64)
    model_ids = {id(p) for p in model.parameters()}
    assert model_ids.isdisjoint({id(p) for p in guide.parameters()})
    assert id(model.prior.pseudo_raw) in model_ids
    assert not any(k.startswith("prior._encoder") for k in model.state_dict())
