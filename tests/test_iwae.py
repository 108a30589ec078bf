"""The importance-weighted objective: against closed-form log p(x), equal to the ELBO at K = 1, in SVI and training."""

from __future__ import annotations

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI

from mixvae import GUIDES, PRIORS, TrainConfig, build, train
from mixvae.build import compatible_priors
from mixvae.guides import CategoricalGuide, GaussianGuide
from mixvae.inference import IWAE_ELBO, iwae_bound, iwae_loss, log_weights
from mixvae.inference.direct import direct_loss
from mixvae.models import GMMPrior, StandardPrior

from .test_closed_forms import data, linear_gaussian, log_evidence

VALID = [(p, g) for p in PRIORS.names() for g in GUIDES.names() if p in compatible_priors(g)]
D = 2


def _mean_bound(model, guide, x, k: int, repeats: int) -> tuple[torch.Tensor, torch.Tensor]:
    """E[L_K] per datapoint over ``repeats`` independent estimates, and its standard error."""
    with torch.no_grad():
        qs = guide.q_latents(x)
        log_w = log_weights(model, qs, x, k * repeats, reparameterized=False).double()  # (K R, B)
        bounds = torch.stack([iwae_bound(c) for c in log_w.split(k)])  # (R, B)
    return bounds.mean(0), bounds.std(0) / math.sqrt(repeats)


def _gmm_evidence(prior: GMMPrior, w, b, s, x) -> torch.Tensor:
    """log p(x) = log sum_y pi_y N(x; W mu_y + b, W Sigma_y W^T + S)."""
    covs = w @ torch.diag_embed(prior.scales.detach() ** 2) @ w.T + torch.diag(s**2)
    comps = dist.MultivariateNormal(prior.locs.detach() @ w.T + b, covs)
    return (prior.logits.detach().log_softmax(-1) + comps.log_prob(x.unsqueeze(-2))).logsumexp(-1)


def _gmm_linear_gaussian():
    torch.manual_seed(0)
    prior = GMMPrior(D, 3)
    with torch.no_grad():
        prior.logits = torch.tensor([0.2, -0.5, 1.0])
        prior.locs = torch.tensor([[-2.0, 0.0], [0.0, 2.0], [2.0, -1.0]])
        prior.scales = torch.tensor([[0.5, 0.7], [0.6, 0.4], [0.8, 0.5]])
    return linear_gaussian(prior)


@pytest.mark.parametrize("conjugate", ["standard x gaussian", "gmm x gaussian", "gmm x categorical"])
def test_iwae_rises_monotonically_to_the_closed_form_log_evidence(conjugate):
    torch.manual_seed(1)
    if conjugate == "standard x gaussian":
        model, w, b, s = linear_gaussian(StandardPrior(D))
        evidence = log_evidence(data(), w, b, s)
    else:
        model, w, b, s = _gmm_linear_gaussian()
        evidence = _gmm_evidence(model.prior, w, b, s, data())
    guide = (
        GaussianGuide(3, D, hidden=()) if "gaussian" in conjugate else CategoricalGuide(3, D, 3, hidden=())
    )
    if conjugate != "standard x gaussian":
        # a broad q(z | x) = N(0, 3^2 I) (every y alike) covers each mode of the mixture posterior:
        # a proposal under which K = 2,000 weights suffice; a random one would miss modes
        with torch.no_grad():
            net = guide.head if isinstance(guide, GaussianGuide) else guide.z_head
            net.weight.zero_()
            net.bias.copy_(torch.tensor([0.0, 0.0, 3.0, 3.0]))
            if isinstance(guide, CategoricalGuide):
                guide.y_head.weight.zero_()
    x = data()
    means = []
    for k, repeats in ((1, 4000), (2, 2000), (5, 1000), (20, 400), (100, 100), (2000, 10)):
        mean, se = _mean_bound(model, guide, x, k, repeats)
        assert (mean <= evidence.double() + 4 * se + 1e-6).all(), k  # a lower bound of log p(x)
        means.append((mean, se))
    for (a, sa), (b_, sb) in itertools.pairwise(means):  # rises with K, beyond its noise
        assert (b_ >= a - 4 * torch.sqrt(sa**2 + sb**2)).all()
    (first, _), (last, se) = means[0], means[-1]
    assert (last - first).min() > 0.5  # the guide is far from the posterior: a real gap that K closes
    assert ((evidence.double() - last).abs() < 4 * se + 0.05).all()  # ... down to the noise at K = 2,000


@pytest.mark.parametrize("prior,guide", [p for p in VALID if p[1] != "categorical"])
def test_k1_is_the_elbo_with_the_same_draws(prior, guide):
    """K = 1: log w of one draw is the ELBO's integrand (y of a model-enumerated prior summed out in both)."""
    model, g = build(TrainConfig(prior=prior, guide=guide, hidden=(8,), latent_dim=3, components=4), 12)
    x = torch.bernoulli(torch.rand(9, 12, generator=torch.Generator().manual_seed(2)))
    torch.manual_seed(5)
    elbo = direct_loss(model, g, x, 90, beta=1.0, analytic_kl=False)
    elbo_grads = torch.autograd.grad(elbo, list(g.parameters()), allow_unused=True)
    torch.manual_seed(5)
    bound = iwae_loss(model, g, x, 90, 1)
    bound_grads = torch.autograd.grad(bound, list(g.parameters()), allow_unused=True)
    torch.testing.assert_close(bound, elbo, rtol=1e-5, atol=1e-4)
    for a, b in zip(bound_grads, elbo_grads, strict=True):
        if a is not None or b is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_k1_of_the_categorical_guide_is_the_collapsed_elbo_at_least_the_enumerated_one():
    model, *_ = _gmm_linear_gaussian()
    guide = CategoricalGuide(3, D, 3, hidden=())
    x = data()
    k1, se = _mean_bound(model, guide, x, 1, 20000)
    torch.manual_seed(3)
    with torch.no_grad():  # the enumerated ELBO: y summed exactly, z drawn 20,000 times per point
        enum = torch.stack(
            [
                -direct_loss(model, guide, xi.expand(20000, -1), None, beta=1.0, analytic_kl=False) / 20000
                for xi in x
            ]
        )
    assert (k1 >= enum.double() - 4 * se - 0.02).all()
    assert (k1 - enum.double()).max() > 0.01  # strictly looser where q(y | z, x) is not the posterior


@pytest.mark.parametrize("prior,guide", VALID)
def test_iwae_elbo_trains_every_pair_in_svi(prior, guide):
    model, g = build(TrainConfig(prior=prior, guide=guide, hidden=(16,), latent_dim=3, components=3), 12)
    x = torch.bernoulli(torch.rand(64, 12, generator=torch.Generator().manual_seed(4)) * 0.3)
    svi = SVI(model, g, pyro.optim.Adam({"lr": 0.02}), IWAE_ELBO(num_particles=5))
    before = [p.detach().clone() for p in g.parameters()]
    losses = [svi.step(x, num_data=64) for _ in range(40)]
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) < sum(losses[:5])
    assert all(
        not torch.equal(a, p.detach()) for a, p in zip(before, g.parameters(), strict=True) if a.numel() > 1
    )


def test_training_an_elbo_with_m_draws_per_point(small_digits, tmp_path):
    """--particles M without --objective iwae: the ELBO averaged over M draws (Dilokthanakul et
    al.'s M), on the direct path (checked against Pyro's vectorised particles at the first step)
    and on Pyro's, labelled points included."""
    common = dict(hidden=(16,), latent_dim=3, components=10, epochs=1, particles=3)
    direct = TrainConfig(prior="gmm", guide="gaussian", out=str(tmp_path / "d"), **common)
    run = train(direct, dataset=small_digits, progress=False, figures=False)
    assert run.summary["objective"] == "direct (M = 3 draws per point)"
    pyro_path = TrainConfig(
        prior="gmm",
        guide="categorical",
        objective="pyro",
        labels_per_class=5,
        out=str(tmp_path / "p"),
        **common,
    )
    run = train(pyro_path, dataset=small_digits, progress=False, figures=False)
    assert run.summary["objective"] == "pyro (M = 3 draws per point)"
    assert math.isfinite(run.summary["heldout_elbo"])


def test_training_with_the_iwae_objective(small_digits, tmp_path):
    config = TrainConfig(
        prior="gmm", guide="gaussian", hidden=(32,), latent_dim=4, components=3, epochs=2, objective="iwae",
        particles=5, out=str(tmp_path),
    )  # fmt: skip
    run = train(config, dataset=small_digits, progress=False, figures=False)
    assert run.summary["objective"] == "iwae (K = 5)"
    from mixvae.errors import ConfigError

    with pytest.raises(ConfigError, match="--particles must be a positive integer"):
        TrainConfig(objective="iwae", particles=0).validate()
