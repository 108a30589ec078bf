"""DirectELBO: Pyro's ELBO from the declared sites, in a plain SVI loop, checked and refused where it must."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints
from pyro.infer import SVI, TraceEnum_ELBO
from pyro.nn import PyroParam

from mixvae import GUIDES, PRIORS, TrainConfig, build, train
from mixvae.build import compatible_priors
from mixvae.errors import ObjectiveMismatch
from mixvae.inference import DirectELBO, make_elbo, verify_direct
from mixvae.inference.direct import direct_loss, direct_problem
from mixvae.inference.objectives import has_discrete_site
from mixvae.models import BernoulliDecoder, Prior
from mixvae.sites import Site, log_density

VALID = [(p, g) for p in PRIORS.names() for g in GUIDES.names() if p in compatible_priors(g)]
SETTINGS = dict(hidden=(8,), latent_dim=3, components=4, guide_components=3, pseudo_inputs=5)


def _pair(prior: str, guide: str, seed: int = 0):
    pyro.set_rng_seed(seed)
    return build(TrainConfig(prior=prior, guide=guide, **SETTINGS), 12)


@pytest.mark.parametrize("prior,guide", VALID)
def test_svi_with_direct_elbo_is_svi_with_pyros_elbo(prior, guide):
    """Three SVI steps (pyro.optim.Adam) from the same start: same losses, same parameters."""
    x = torch.bernoulli(torch.rand(10, 12, generator=torch.Generator().manual_seed(3)))
    results = {}
    for which in ("direct", "pyro"):
        model, g = _pair(prior, guide)
        elbo = DirectELBO() if which == "direct" else make_elbo(enumerates=has_discrete_site(model, g))
        svi = SVI(model, g, pyro.optim.Adam({"lr": 0.01}), elbo)
        losses = []
        with pyro.get_param_store().scope():
            for step in range(3):
                torch.manual_seed(100 + step)
                falls_back = which == "direct" and step == 0 and direct_problem(model, g) is not None
                with pytest.warns(UserWarning, match="uses Pyro's ELBO") if falls_back else nullcontext():
                    losses.append(svi.step(x, num_data=50))
        results[which] = (losses, [p.detach().clone() for p in [*model.parameters(), *g.parameters()]])
    assert results["direct"][0] == pytest.approx(results["pyro"][0], rel=1e-5)
    for a, b in zip(results["direct"][1], results["pyro"][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # every parameter moved: SVI found them all through the direct loss's param statements
    model, g = _pair(prior, guide)
    for a, b in zip(results["direct"][1], [*model.parameters(), *g.parameters()], strict=True):
        if a.numel() > 1:
            assert not torch.equal(a, b.detach())


@pytest.mark.parametrize(
    "prior,guide", [("gmm", "gaussian"), ("gmm", "categorical"), ("standard", "mixture")]
)
def test_loss_differentiable_loss_and_loss_and_grads_agree(prior, guide):
    model, g = _pair(prior, guide)
    x = torch.bernoulli(torch.full((6, 12), 0.4))
    elbo = DirectELBO(beta=0.5)
    torch.manual_seed(0)
    a = elbo.differentiable_loss(model, g, x, 30)
    grads = torch.autograd.grad(a, list(g.parameters()))
    torch.manual_seed(0)
    b = elbo.loss(model, g, x, 30)
    torch.manual_seed(0)
    for p in g.parameters():
        p.grad = None
    c = elbo.loss_and_grads(model, g, x, 30)
    assert a.item() == pytest.approx(b) == pytest.approx(c)
    for p, grad in zip(g.parameters(), grads, strict=True):
        torch.testing.assert_close(p.grad, grad)


def test_an_overridden_program_falls_back_with_the_reason_and_never_differs():
    """The issue's case: forward and the declaration disagree; DirectELBO computes Pyro's ELBO."""

    class Disagreeing(PRIORS["gmm"]):
        def forward(self, component=None):  # a different program than y ~ Cat, z | y ~ N
            return pyro.sample("z", dist.Normal(self.locs[0], 3.0).to_event(1))

    model, g = _pair("gmm", "gaussian")
    model.prior = Disagreeing(3, 4)
    x = torch.bernoulli(torch.full((8, 12), 0.3))
    elbo = DirectELBO()
    torch.manual_seed(1)
    with pytest.warns(UserWarning, match=r"prior 'gmm' \(Disagreeing\) writes its own Pyro program"):
        ours = elbo.loss(model, g, x, 8)
    torch.manual_seed(1)
    # the pair declares y, so it is Pyro's TraceEnum_ELBO (which then finds nothing to enumerate)
    theirs = TraceEnum_ELBO(max_plate_nesting=1, strict_enumeration_warning=False).loss(model, g, x, 8)
    assert ours == pytest.approx(theirs, rel=1e-6)


class TemperedBernoulli(BernoulliDecoder):
    """Its Pyro program (forward) is not what its inherited log_likelihood computes."""

    def forward(self, z):
        return dist.Bernoulli(logits=self.net(z) / 2, validate_args=False).to_event(1)


def test_a_mismatch_stops_training_at_the_first_step_naming_the_site(small_digits, tmp_path):
    model, g = _pair("gmm", "gaussian")
    model.decoder = TemperedBernoulli(3, 12, (8,))
    x = torch.bernoulli(torch.full((8, 12), 0.3))
    with pytest.raises(ObjectiveMismatch, match=r"site 'x'"):
        verify_direct(model, g, x, 8)
    # through the trainer: a registered likelihood whose program and fast path disagree
    from mixvae.models import LIKELIHOODS

    LIKELIHOODS.register("tempered-test")(TemperedBernoulli)
    try:
        config = TrainConfig(
            prior="gmm", guide="gaussian", likelihood="tempered-test", epochs=1, out=str(tmp_path), **SETTINGS
        )
        with pytest.raises(ObjectiveMismatch, match=r"site 'x'.*--objective pyro"):
            train(config, dataset=small_digits, progress=False, figures=False)
        assert not (tmp_path / "checkpoint.pt").exists()
        run = train(
            config, dataset=small_digits, progress=False, figures=False, objective="pyro", overwrite=True
        )
        assert run.summary["objective"] == "pyro"
    finally:
        LIKELIHOODS.drop_module(TemperedBernoulli.__module__)


def test_a_wrong_log_prob_override_is_named():
    class Wrong(PRIORS["gmm"]):
        def log_prob(self, latents):
            return super().log_prob(latents) + 1.0  # a dropped normaliser, say

    model, g = _pair("gmm", "gaussian")
    model.prior = Wrong(3, 4)
    with pytest.raises(ObjectiveMismatch, match="log_prob"):
        verify_direct(model, g, torch.bernoulli(torch.full((8, 12), 0.3)), 8)


class LaplaceMixturePrior(Prior):
    r"""A user's prior written outside mixvae: y ~ Cat(pi), z | y ~ Laplace(mu_y, b_y)."""

    sites = (Site("y", "y_dist", enumerated=True), Site("z", "z_dist"))

    def __init__(self, latent_dim: int, k: int) -> None:
        super().__init__(latent_dim)
        self.logits = PyroParam(torch.zeros(k))
        self.locs = PyroParam(torch.randn(k, latent_dim))
        self.scales = PyroParam(torch.ones(k, latent_dim), constraints.positive)

    @property
    def num_components(self) -> int:
        return self.logits.shape[-1]

    def y_dist(self, values: Mapping[str, torch.Tensor]):
        return dist.Categorical(logits=self.logits)

    def z_dist(self, values: Mapping[str, torch.Tensor]):
        y = values["y"]
        return dist.Laplace(self.locs[y], self.scales[y]).to_event(1)


@pytest.mark.parametrize("guide", ["gaussian", "categorical", "mixture"])
def test_a_users_prior_gets_the_direct_elbo_marginal_and_posterior_from_its_declaration(guide):
    model, g = _pair("gmm", guide)
    model.prior = LaplaceMixturePrior(3, 4)
    assert model.prior.latent_sites == ("y", "z") and model.prior.discrete_site == "y"
    assert direct_problem(model, g) is None
    x = torch.bernoulli(torch.full((8, 12), 0.3))
    params = [*model.parameters(), *g.parameters()]
    torch.manual_seed(2)
    ours = direct_loss(model, g, x, 20)
    torch.manual_seed(2)
    with pyro.get_param_store().scope():
        theirs = make_elbo().differentiable_loss(model, g, x, 20)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    for a, b in zip(torch.autograd.grad(ours, params), torch.autograd.grad(theirs, params), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # the marginal and the posterior are read from the declaration: pi_y Laplace(z; mu_y, b_y)
    prior = model.prior
    z = torch.randn(5, 3)
    pi = prior.logits.softmax(-1)
    joint = torch.stack(
        [pi[k].log() + dist.Laplace(prior.locs[k], prior.scales[k]).log_prob(z).sum(-1) for k in range(4)], -1
    )
    torch.testing.assert_close(prior.log_prob({"z": z}), joint.logsumexp(-1))
    torch.testing.assert_close(prior.marginal().log_prob(z), joint.logsumexp(-1))
    torch.testing.assert_close(prior.component_log_posterior({"z": z}), joint.log_softmax(-1))
    assert prior.sample_z(7).shape == (7, 3) and prior.sample_z(7, component=2).shape == (7, 3)


@pytest.mark.parametrize("prior", ["gmm", "gmm-full"])
def test_the_fast_densities_equal_the_declarations_enumeration(prior):
    """The two other paths to the same density, against log_density's enumeration of y: gmm's
    matrix products (log_prob, marginal, component posterior) and gmm-full's MixtureSameFamily marginal."""
    model, _ = _pair(prior, "gaussian")
    p = model.prior
    latents = {"z": torch.randn(6, 3) * 2}
    outside, inside = log_density(p.sites, p.site_dist, latents)
    reference = outside + inside.logsumexp(0)
    expected_kind = "DiagNormalMixture" if prior == "gmm" else "MixtureSameFamily"
    assert type(p.marginal()).__name__ == expected_kind  # the path under test is the one taken
    torch.testing.assert_close(p.marginal().log_prob(latents["z"]), reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(p.log_prob(latents), reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        p.component_log_posterior(latents), inside.log_softmax(0).movedim(0, -1), rtol=1e-5, atol=1e-5
    )


def test_dilokthanakul_density_and_posterior_from_its_declaration_are_the_papers():
    """log p(w, z) = log N(w; 0, I) + log sum_c (1/K) N(z; mu_c(w), sigma_c(w)^2), written out here."""
    model, _ = _pair("dilokthanakul", "dilokthanakul")
    p = model.prior
    w, z = torch.randn(6, p.w_dim), torch.randn(6, 3)
    locs, scales = p.component_params(w)  # (6, K, D)
    joint = dist.Normal(locs, scales).log_prob(z.unsqueeze(-2)).sum(-1) - torch.log(torch.tensor(4.0))
    log_w = dist.Normal(0.0, 1.0).log_prob(w).sum(-1)
    with torch.no_grad():
        torch.testing.assert_close(p.log_prob({"w": w, "z": z}), log_w + joint.logsumexp(-1))
        torch.testing.assert_close(p.component_log_posterior({"w": w, "z": z}), joint.log_softmax(-1))


@pytest.mark.parametrize("prior,guide", [pg for pg in VALID if direct_problem(*_pair(*pg)) is None])
@pytest.mark.parametrize("analytic_kl", [True, False], ids=["kl-analytic", "kl-mc"])
def test_particles_are_pyros_vectorised_particles_with_the_same_draws(prior, guide, analytic_kl):
    """--particles M with an ELBO: M draws per point, averaged, as TraceEnum_ELBO(num_particles=M,
    vectorize_particles=True) draws them (the same random numbers, so the same loss)."""
    model, g = _pair(prior, guide)
    x = torch.bernoulli(torch.rand(10, 12, generator=torch.Generator().manual_seed(4)))
    assert verify_direct(model, g, x, 40, beta=0.7, analytic_kl=analytic_kl, particles=5) < 1e-5
    torch.manual_seed(0)
    one = direct_loss(model, g, x, 40, analytic_kl=analytic_kl)
    torch.manual_seed(0)
    five = direct_loss(model, g, x, 40, analytic_kl=analytic_kl, particles=5)
    assert five.item() != pytest.approx(one.item(), rel=1e-6)  # more draws: another estimate
