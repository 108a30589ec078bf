"""The mixture distributions the guides use: fit to their density, pathwise gradients."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from mixvae.distributions import UnivariateMixtureOfNormals, diag_normal_mixture

LOCS = torch.tensor([[-2.0], [0.5], [3.0]])
SCALES = torch.tensor([[0.5], [1.0], [0.3]])
LOGITS = torch.tensor([0.3, -0.2, 0.5])


def test_univariate_mixture_samples_follow_its_density():
    d = UnivariateMixtureOfNormals(LOCS, SCALES, LOGITS)
    z = d.sample((20000,))
    assert z.shape == (20000, 1)
    w = LOGITS.softmax(-1)

    def cdf(v):
        return sum(float(w[k]) * stats.norm.cdf(v, float(LOCS[k, 0]), float(SCALES[k, 0])) for k in range(3))

    assert stats.kstest(z[:, 0].numpy(), cdf).pvalue > 1e-3
    # log_prob integrates to one and matches scipy's mixture density
    grid = torch.linspace(-6, 6, 4001).unsqueeze(-1)
    dens = d.log_prob(grid).exp()
    assert float(torch.trapezoid(dens, grid[:, 0])) == pytest.approx(1.0, abs=1e-4)
    ref = sum(
        float(w[k]) * stats.norm.pdf(grid[:, 0].numpy(), float(LOCS[k, 0]), float(SCALES[k, 0]))
        for k in range(3)
    )
    assert torch.allclose(dens, torch.as_tensor(ref, dtype=torch.float32), atol=1e-5)


def test_univariate_mixture_pathwise_gradient_matches_analytic():
    """d/dtheta E[z^2] with E[z^2] = sum_k w_k (mu_k^2 + s_k^2)."""
    locs = LOCS.clone().requires_grad_()
    scales = SCALES.clone().requires_grad_()
    logits = LOGITS.clone().requires_grad_()
    torch.manual_seed(0)
    z = UnivariateMixtureOfNormals(locs, scales, logits).rsample((400000,))
    mc = torch.autograd.grad((z**2).mean(), (locs, scales, logits))
    w = logits.softmax(-1)
    exact_value = (w * (locs[:, 0] ** 2 + scales[:, 0] ** 2)).sum()
    exact = torch.autograd.grad(exact_value, (locs, scales, logits))
    for g_mc, g_exact in zip(mc, exact, strict=True):
        assert torch.allclose(g_mc, g_exact, atol=0.05), (g_mc, g_exact)


def test_univariate_mixture_broadcasts_and_expands():
    d = UnivariateMixtureOfNormals(LOCS.expand(4, 3, 1), SCALES, LOGITS)
    assert d.batch_shape == (4,) and d.event_shape == (1,)
    e = d.expand((2, 4))
    assert e.batch_shape == (2, 4)
    assert e.rsample().shape == (2, 4, 1)
    assert e.log_prob(torch.zeros(2, 4, 1)).shape == (2, 4)


@pytest.mark.parametrize("d", [1, 3])
def test_diag_normal_mixture_mean_and_log_prob(d):
    locs, scales, logits = torch.randn(5, 4, d), torch.rand(5, 4, d) + 0.1, torch.randn(5, 4)
    m = diag_normal_mixture(locs, scales, logits)
    assert m.batch_shape == (5,) and m.event_shape == (d,)
    assert torch.allclose(m.mean, (logits.softmax(-1).unsqueeze(-1) * locs).sum(-2), atol=1e-6)
    z = torch.randn(7, 5, d)
    ref = torch.logsumexp(
        logits.log_softmax(-1) + torch.distributions.Normal(locs, scales).log_prob(z.unsqueeze(-2)).sum(-1),
        -1,
    )
    assert torch.allclose(m.log_prob(z), ref, atol=1e-5)


@pytest.mark.parametrize("d", [1, 3])
def test_batched_mixture_draws_come_from_their_own_datapoint(d):
    """Pyro 1.9's MixtureOfDiagNormals.sample((S,)) mixes up datapoints; ours must not."""
    locs = torch.arange(4.0).view(4, 1, 1).expand(4, 2, d)  # datapoint i sits at i
    m = diag_normal_mixture(locs, torch.full((4, 2, d), 1e-3), torch.zeros(4, 2))
    for s in (3, 7):
        z = m.sample((s,))
        assert z.shape == (s, 4, d)
        assert torch.allclose(z, locs[:, 0].expand(s, 4, d), atol=0.01)
    assert m.rsample((2,)).shape == (2, 4, d)


def test_mixture_pathwise_gradient_stays_finite_in_40_dimensions():
    """Narrow components in D = 40: Pyro's gradient overflows float32 there (densities ~e^150)."""
    torch.manual_seed(0)
    locs = torch.randn(6, 3, 40).requires_grad_()
    scales = torch.full((6, 3, 40), 0.01).requires_grad_()
    logits = torch.zeros(6, 3).requires_grad_()
    z = diag_normal_mixture(locs, scales, logits).rsample()
    assert z.dtype == torch.float32 and z.shape == (6, 40)
    (z**2).sum().backward()
    for g in (locs.grad, scales.grad, logits.grad):
        assert torch.isfinite(g).all()


def test_mixture_pathwise_gradient_is_unbiased_in_several_dimensions():
    """d/dtheta E[|z|^2] by the pathwise gradient against its closed form, D = 3.

    The gradient of the mixture weights is unbiased but heavy-tailed (Jankowiak &
    Obermeyer 2018): it is averaged over 10 seeded repeats.
    """
    locs0 = torch.tensor([[-1.0, 0.5, 2.0], [1.5, -0.5, 0.0]])
    scales0 = torch.tensor([[0.5, 1.0, 0.3], [0.8, 0.4, 1.2]])
    logits0 = torch.tensor([0.3, -0.2])
    w = logits0.softmax(-1)
    second_moment = (locs0**2 + scales0**2).sum(-1)  # E[|z|^2 | k]
    grads = []
    for seed in range(10):
        torch.manual_seed(seed)
        locs, scales, logits = (t.clone().requires_grad_() for t in (locs0, scales0, logits0))
        (diag_normal_mixture(locs, scales, logits).rsample((200000,)) ** 2).sum(-1).mean().backward()
        grads.append((locs.grad, scales.grad, logits.grad))
    assert torch.allclose(grads[0][0], 2 * w[:, None] * locs0, atol=0.03)
    assert torch.allclose(grads[0][1], 2 * w[:, None] * scales0, atol=0.03)
    mean_logits_grad = torch.stack([g[2] for g in grads]).mean(0)
    expected = w * (second_moment - (w * second_moment).sum())  # (0.43, -0.43)
    assert torch.allclose(mean_logits_grad, expected, atol=0.3)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_decoder_log_likelihood_is_the_distributions_log_prob(likelihood):
    """The written-out log p(x|z) of the training and evaluation loops equals the Pyro site's."""
    from mixvae.models.decoders import LIKELIHOODS

    torch.manual_seed(0)
    decoder = LIKELIHOODS[likelihood](3, 12, (8,))
    x = torch.rand(5, 12)  # grey levels: Bernoulli's log_prob is then the negative cross-entropy
    for z in (torch.randn(5, 3), torch.randn(4, 5, 3)):  # one z per point, or K draws per point
        expected = decoder(z).log_prob(x)
        got = decoder.log_likelihood(z, x)
        assert got.shape == expected.shape == z.shape[:-1]
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("shape", [(7,), (3, 5)])
def test_gmm_prior_log_prob_is_its_marginals(shape):
    """GMMPrior.log_prob (matrix products) is the MixtureSameFamily marginal's density, gradients too."""
    from mixvae.models import GMMPrior

    torch.manual_seed(0)
    prior = GMMPrior(4, 6)
    with torch.no_grad():
        prior.logits = torch.randn(6)
        prior.scales = torch.rand(6, 4) + 0.3
    z = (2 * torch.randn(*shape, 4)).requires_grad_()
    fast = prior.log_prob({"z": z})
    components = torch.distributions.Independent(torch.distributions.Normal(prior.locs, prior.scales), 1)
    weights = torch.distributions.Categorical(logits=prior.logits)
    slow = torch.distributions.MixtureSameFamily(weights, components).log_prob(z)
    assert fast.shape == slow.shape == shape
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    params = [z, *prior.parameters()]
    for a, b in zip(
        torch.autograd.grad(fast.sum(), params), torch.autograd.grad(slow.sum(), params), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # p(y | z) from the same matrix products: the components' densities and the weights, normalised
    with torch.no_grad():
        joint = components.log_prob(z.unsqueeze(-2)) + prior.logits.log_softmax(-1)
        posterior = prior.component_log_posterior({"z": z})
    assert posterior.shape == (*shape, 6)
    torch.testing.assert_close(posterior, joint.log_softmax(-1), rtol=1e-5, atol=1e-5)


def test_gmm_subclasses_with_other_components_score_their_own_marginal():
    from mixvae.models import FullCovGMMPrior, GMMPrior

    class Wider(GMMPrior):  # a user's mixture with other components
        def _gaussian(self, loc, scale):
            return torch.distributions.Independent(torch.distributions.StudentT(3.0, loc, scale), 1)

    torch.manual_seed(0)
    z = torch.randn(5, 3)
    for prior in (FullCovGMMPrior(3, 4), Wider(3, 4)):
        components = prior._gaussian(prior.locs, prior.component_scales)  # batch (K,)
        joint = components.log_prob(z.unsqueeze(-2)) + prior.logits.log_softmax(-1)  # written out here
        torch.testing.assert_close(prior.log_prob({"z": z}), joint.logsumexp(-1))
        torch.testing.assert_close(prior.marginal().log_prob(z), joint.logsumexp(-1))
        torch.testing.assert_close(prior.component_log_posterior({"z": z}), joint.log_softmax(-1))
