"""Objectives against closed forms on small conjugate models, on fixed weights."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from torch.distributions import Normal

from mixvae.guides import GaussianGuide, MixtureGuide
from mixvae.inference import LatentScale, make_elbo
from mixvae.models import VAE, BernoulliDecoder, FullCovGMMPrior, GaussianDecoder, GMMPrior, StandardPrior
from mixvae.nn import data_plate

P, D, B = 3, 2, 4


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def linear_gaussian(prior) -> tuple[VAE, torch.Tensor, torch.Tensor, torch.Tensor]:
    """x = W z + b + noise(s): a linear decoder with fixed random weights."""
    decoder = GaussianDecoder(D, P, hidden=())
    with torch.no_grad():
        decoder.net[0].weight.copy_(torch.tensor([[1.0, -0.5], [0.3, 0.8], [-0.7, 0.2]]))
        decoder.net[0].bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        decoder.scale = torch.tensor([0.5, 0.7, 0.9])
    return (
        VAE(prior, decoder),
        decoder.net[0].weight.detach(),
        decoder.net[0].bias.detach(),
        decoder.scale.detach(),
    )


def data() -> torch.Tensor:
    return torch.tensor([[0.5, -1.0, 0.8], [1.5, 0.2, -0.3], [-0.4, 0.9, 0.1], [0.0, 0.0, 0.0]])


def analytic_elbo(x, w, b, s, loc, scale) -> torch.Tensor:
    """Per-datapoint ELBO of q = N(loc, diag scale^2) under z ~ N(0, I), x ~ N(Wz + b, diag s^2)."""
    mean = loc @ w.T + b
    var_term = (w**2 @ (scale**2).T).T  # (B, P): sum_d W_pd^2 v_d
    expected_ll = (Normal(mean, s).log_prob(x) - 0.5 * var_term / s**2).sum(-1)
    kl = 0.5 * (scale**2 + loc**2 - 1 - 2 * scale.log()).sum(-1)
    return expected_ll - kl


def log_evidence(x, w, b, s) -> torch.Tensor:
    cov = w @ w.T + torch.diag(s**2)
    return dist.MultivariateNormal(b, cov).log_prob(x)


def mc_elbo(model, guide, x, n=20000, analytic_kl=True) -> float:
    """Pyro's estimate (vectorised particles), summed over the batch."""
    elbo = make_elbo(n, vectorize_particles=True, enumerates=False, analytic_kl=analytic_kl)
    return -elbo.loss(model, guide, x)


@pytest.mark.parametrize("analytic_kl", [True, False], ids=["kl-analytic", "kl-mc"])
def test_standard_prior_elbo_matches_analytic_and_is_bounded_by_log_evidence(analytic_kl):
    model, w, b, s = linear_gaussian(StandardPrior(D))
    guide = GaussianGuide(P, D, hidden=())
    x = data()
    loc, scale = guide.params(x)
    exact = analytic_elbo(x, w, b, s, loc.detach(), scale.detach())
    evidence = log_evidence(x, w, b, s)
    assert (exact <= evidence).all()
    # Monte Carlo error of the summed estimate, from the integrand's spread.
    z = guide.q_z(x).sample((20000,))
    integrand = (
        dist.Normal(z @ w.T + b, s).log_prob(x).sum(-1)
        + Normal(0, 1).log_prob(z).sum(-1)
        - guide.q_z(x).log_prob(z)
    ).sum(-1)
    se = float(integrand.std() / math.sqrt(len(integrand)))
    estimate = mc_elbo(model, guide, x, analytic_kl=analytic_kl)
    assert estimate == pytest.approx(float(exact.sum()), abs=5 * se + 1e-3)


def _gaussian_log_density(z: torch.Tensor, loc: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """log N(z; loc, cov) from the textbook formula; z (B, 1, D), loc (K, D), cov (K, D, D) -> (B, K)."""
    diff = (z - loc).unsqueeze(-1)  # (B, K, D, 1)
    maha = (diff.transpose(-1, -2) @ torch.linalg.inv(cov) @ diff)[..., 0, 0]
    return -0.5 * (loc.shape[-1] * math.log(2 * math.pi) + torch.logdet(cov) + maha)


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_gmm_prior_elbo_is_the_exact_sum_over_y_on_fixed_weights(covariance):
    prior = GMMPrior(D, 3) if covariance == "diag" else FullCovGMMPrior(D, 3)
    with torch.no_grad():
        prior.logits = torch.tensor([0.2, -0.5, 1.0])
        if covariance == "diag":
            prior.scales = torch.tensor([[0.5, 1.2], [1.0, 0.8], [2.0, 0.3]])
            cov = torch.diag_embed(prior.scales**2)
        else:
            prior.scale_tril = torch.tensor(
                [[[0.5, 0.0], [0.4, 1.2]], [[1.0, 0.0], [-0.6, 0.8]], [[2.0, 0.0], [1.5, 0.3]]]
            )
            cov = prior.scale_tril @ prior.scale_tril.transpose(-1, -2)
    model, w, b, s = linear_gaussian(prior)
    guide = GaussianGuide(P, D, hidden=())
    x = data()
    trace = poutine.trace(guide).get_trace(x)
    z = trace.nodes["z"]["value"]
    for beta in (1.0, 0.3):
        scale = LatentScale(beta)
        pyro_elbo = -make_elbo().loss(scale(model), scale(poutine.replay(guide, trace=trace)), x)
        # by hand: log p(z) = logsumexp_y [log pi_y + log N(z; mu_y, sigma_y)]
        log_pi = prior.logits.log_softmax(-1)
        comp = _gaussian_log_density(z.unsqueeze(-2), prior.locs, cov)  # (B, K)
        log_pz = torch.logsumexp(log_pi + comp, -1)
        loc, sd = guide.params(x)
        log_qz = Normal(loc, sd).log_prob(z).sum(-1)
        log_px = Normal(z @ w.T + b, s).log_prob(x).sum(-1)
        by_hand = (log_px + beta * (log_pz - log_qz)).sum()
        assert pyro_elbo == pytest.approx(float(by_hand), rel=1e-5)


@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_categorical_guide_elbo_is_the_exact_sum_over_y(beta):
    from mixvae.guides import CategoricalGuide

    k = 3
    prior = GMMPrior(D, k)
    model, w, b, s = linear_gaussian(prior)
    guide = CategoricalGuide(P, D, k, hidden=(5,))
    x = data()
    trace = poutine.trace(poutine.enum(guide, first_available_dim=-2)).get_trace(x)
    z = trace.nodes["z"]["value"]  # (K, B, D): one draw per value of y
    assert z.shape == (k, B, D)
    scale = LatentScale(beta)
    pyro_elbo = -make_elbo().loss(scale(model), scale(poutine.replay(guide, trace=trace)), x)
    log_qy = guide.component_logits(x).log_softmax(-1).T  # (K, B)
    h = guide.body(x)
    loc, sd = guide._z_params(h, guide.y_embed.weight.unsqueeze(-2))  # (K, B, D)
    log_qz = Normal(loc, sd).log_prob(z).sum(-1)
    log_py = prior.logits.log_softmax(-1).unsqueeze(-1)  # (K, 1)
    log_pz = Normal(prior.locs.unsqueeze(-2), prior.scales.unsqueeze(-2)).log_prob(z).sum(-1)
    log_px = Normal(z @ w.T + b, s).log_prob(x).sum(-1)
    integrand = log_px + beta * (log_py + log_pz - log_qy - log_qz)
    by_hand = (log_qy.exp() * integrand).sum()
    assert pyro_elbo == pytest.approx(float(by_hand), rel=1e-5)


def _identical_mixture(gauss: GaussianGuide, k: int) -> MixtureGuide:
    """A mixture guide whose k components all equal the Gaussian guide's q(z|x)."""
    mix = MixtureGuide(P, D, k, hidden=())
    with torch.no_grad():
        head = mix.head
        wg, bg = gauss.head.weight, gauss.head.bias  # (2D, P), (2D,)
        weight = head.weight.view(k, 2 * D + 1, P)
        bias = head.bias.view(k, 2 * D + 1)
        weight[:, : 2 * D] = wg
        bias[:, : 2 * D] = bg
        weight[:, 2 * D] = 0.0
        bias[:, 2 * D] = 0.0
    return mix


@pytest.mark.parametrize("k", [2, 4])
def test_mixture_guide_with_identical_components_equals_gaussian_guide(k):
    """Catches the log K inflation of a guide-only component index."""
    model, w, b, s = linear_gaussian(StandardPrior(D))
    gauss = GaussianGuide(P, D, hidden=())
    mix = _identical_mixture(gauss, k)
    x = data()
    # Same z, same integrand: exactly the same ELBO.
    trace = poutine.trace(gauss).get_trace(x)
    elbo = make_elbo(enumerates=False, analytic_kl=False)
    assert elbo.loss(model, poutine.replay(mix, trace=trace), x) == pytest.approx(
        elbo.loss(model, poutine.replay(gauss, trace=trace), x), rel=1e-6
    )
    # And by Monte Carlo against the analytic ELBO.
    loc, scale = gauss.params(x)
    exact = float(analytic_elbo(x, w, b, s, loc.detach(), scale.detach()).sum())
    assert mc_elbo(model, mix, x) == pytest.approx(exact, abs=0.1)


def guide_only_component(gauss: GaussianGuide, k: int):
    """The trap of the design note: a component index enumerated only in the guide."""

    def guide(x, num_data=None):
        with data_plate(x, num_data):
            c = pyro.sample("c", dist.Categorical(logits=torch.zeros(k)), infer={"enumerate": "parallel"})
            loc, scale = gauss.params(x)
            return pyro.sample("z", dist.Normal(loc + 0 * c.unsqueeze(-1), scale).to_event(1))

    return guide


def test_the_inflation_check_fails_on_a_guide_only_component():
    """The same check, run on the wrong construction, sees the bound rise by log K."""
    k = 4
    model, w, b, s = linear_gaussian(StandardPrior(D))
    gauss = GaussianGuide(P, D, hidden=())
    x = data()
    loc, scale = gauss.params(x)
    exact = float(analytic_elbo(x, w, b, s, loc.detach(), scale.detach()).sum())
    wrong = guide_only_component(gauss, k)
    elbo = make_elbo(20000, vectorize_particles=True, enumerates=True)
    with pytest.warns(UserWarning, match="in guide but not model"):
        inflated = -elbo.loss(model, wrong, x)
    assert inflated - exact == pytest.approx(B * math.log(k), abs=0.1)


def test_pyro_loss_equals_hand_written_bce_plus_analytic_kl():
    """standard x gaussian with a Bernoulli decoder, fixed weights."""
    torch.manual_seed(1)
    pdim = 6
    model = VAE(StandardPrior(D), BernoulliDecoder(D, pdim, hidden=(5,)))
    guide = GaussianGuide(pdim, D, hidden=(5,))
    x = torch.rand(B, pdim).round()
    loc, scale = (t.detach() for t in guide.params(x))
    kl = 0.5 * (scale**2 + loc**2 - 1 - 2 * scale.log()).sum()

    def bce(z):
        logits = model.decoder.net(z)
        return torch.nn.functional.binary_cross_entropy_with_logits(
            logits, x.expand_as(logits), reduction="none"
        ).sum((-1, -2))

    # 1. On one replayed z, the Monte Carlo objective (--kl mc) is BCE + log q(z|x) - log p(z)
    #    exactly, and the default objective (--kl analytic) is BCE + the analytic KL exactly.
    trace = poutine.trace(guide).get_trace(x)
    z = trace.nodes["z"]["value"]
    replayed = poutine.replay(guide, trace=trace)
    mc_loss = make_elbo(enumerates=False, analytic_kl=False).loss(model, replayed, x)
    single = bce(z) + Normal(loc, scale).log_prob(z).sum() - Normal(0, 1).log_prob(z).sum()
    assert mc_loss == pytest.approx(float(single), rel=1e-5)
    analytic_loss = make_elbo(enumerates=False).loss(model, replayed, x)
    assert analytic_loss == pytest.approx(float(bce(z) + kl), rel=1e-5)
    # 2. In expectation both are BCE + the analytic KL.
    n = 20000
    zs = guide.q_z(x).sample((n,))
    hand = bce(zs).detach()
    se = float(hand.std() / math.sqrt(n))
    for analytic_kl in (False, True):
        elbo = make_elbo(n, vectorize_particles=True, enumerates=False, analytic_kl=analytic_kl)
        assert elbo.loss(model, guide, x) == pytest.approx(float(hand.mean() + kl), abs=6 * se)
