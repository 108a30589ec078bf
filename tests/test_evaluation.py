"""Evaluation: IW log-likelihood and k-hat against closed forms, ELBO surgery, MMD, runs end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal, Normal, kl_divergence

from mixvae import TrainConfig, build, train
from mixvae.distributions import diag_normal_mixture
from mixvae.evaluation.aggregate import (
    active_units,
    aggregate_log_prob,
    draw_aggregate_posterior,
    elbo_surgery,
    mmd_test,
)
from mixvae.evaluation.evaluate import (
    KHAT_THRESHOLD,
    evaluate_run,
    import_arviz,
    importance_sampling,
    log_likelihood,
    pareto_khat,
    to_inference_data,
)
from mixvae.evaluation.sample_quality import (
    fit_sample_classifier,
    sample_quality,
    score_images,
)
from mixvae.evaluation.sampling import SOURCES
from mixvae.figures.evaluation import FIGURE_NAMES
from mixvae.guides import GaussianGuide, MixtureGuide
from mixvae.inference import evaluate_elbo
from mixvae.models import GMMPrior, StandardPrior
from mixvae.runs import load_run
from tests.test_closed_forms import D, P, analytic_elbo, data, linear_gaussian, log_evidence

# ----------------------------------------------------------------------------- helpers


def _inv_softplus(scale: torch.Tensor) -> torch.Tensor:
    # mixvae.nn.positive(raw) = softplus(raw) + 1e-4
    return torch.log(torch.expm1(scale - 1e-4))


def posterior_guide(w, b, s, inflate: float) -> GaussianGuide:
    """Diagonal q(z|x) with the exact posterior mean of z ~ N(0, I), x ~ N(Wz + b, s^2).

    Scales are ``inflate`` times the posterior marginal standard deviations;
    ``inflate >= sqrt(2)`` makes q wider than the (correlated) posterior in
    every direction in D = 2, so the importance weights are bounded.
    """
    prec = torch.eye(D) + w.T @ torch.diag(s**-2) @ w
    cov = torch.linalg.inv(prec)
    gain = cov @ w.T @ torch.diag(s**-2)  # (D, P): m(x) = gain (x - b)
    guide = GaussianGuide(P, D, hidden=())
    with torch.no_grad():
        lin = guide.head
        lin.weight.zero_()
        lin.weight[:D] = gain
        lin.bias[:D] = -gain @ b
        lin.bias[D:] = _inv_softplus(inflate * cov.diagonal().sqrt())
    return guide


def gmm_prior() -> GMMPrior:
    prior = GMMPrior(D, 3)
    with torch.no_grad():
        prior.logits = torch.tensor([0.2, -0.5, 1.0])
        prior.locs = torch.tensor([[1.0, 0.0], [-1.0, 1.0], [0.0, -1.5]])
        prior.scales = torch.tensor([[0.5, 0.8], [1.0, 0.4], [0.7, 0.7]])
    return prior


def gmm_evidence(prior: GMMPrior, w, b, s, x) -> torch.Tensor:
    """log p(x) = log sum_k pi_k N(x; W mu_k + b, W diag(sigma_k^2) W^T + diag(s^2))."""
    locs = prior.locs.detach() @ w.T + b
    covs = w @ torch.diag_embed(prior.scales.detach() ** 2) @ w.T + torch.diag(s**2)
    return MixtureSameFamily(
        Categorical(logits=prior.logits.detach()), MultivariateNormal(locs, covs)
    ).log_prob(x)


def gmm_posterior_guide(prior: GMMPrior, w, b, s, inflate: float) -> MixtureGuide:
    """A mixture q(z|x): component k has the exact mean of p(z | x, y=k), weights pi (not p(y|x))."""
    k = prior.num_components
    guide = MixtureGuide(P, D, k, hidden=())
    with torch.no_grad():
        weight = guide.head.weight.view(k, 2 * D + 1, P)
        bias = guide.head.bias.view(k, 2 * D + 1)
        weight.zero_()
        for j in range(k):
            prec_prior = torch.diag(prior.scales[j] ** -2)
            cov = torch.linalg.inv(w.T @ torch.diag(s**-2) @ w + prec_prior)
            gain = cov @ w.T @ torch.diag(s**-2)
            weight[j, :D] = gain
            bias[j, :D] = cov @ (prec_prior @ prior.locs[j]) - gain @ b
            bias[j, D : 2 * D] = _inv_softplus(inflate * cov.diagonal().sqrt())
            bias[j, 2 * D] = prior.logits[j]
    return guide


def iw_standard_error(log_w: torch.Tensor) -> torch.Tensor:
    """Delta-method standard error of log mean(w), per row of (N, S) log weights."""
    w = (log_w - log_w.max(-1, keepdim=True).values).exp()
    return w.std(-1) / (math.sqrt(log_w.shape[-1]) * w.mean(-1))


# ----------------------------------------------------------------------------- IW log-likelihood


@torch.no_grad()
def test_iw_log_likelihood_matches_analytic_evidence_standard_prior():
    model, w, b, s = linear_gaussian(StandardPrior(D))
    guide = posterior_guide(w, b, s, inflate=1.5)
    x = data()
    res = importance_sampling(model, guide, x, 4000, chunk_samples=300, khat=True, keep_log_weights=True)
    exact = log_evidence(x, w, b, s).double()
    se = iw_standard_error(res.log_weights)
    assert (res.log_likelihood - exact).abs().max() < 1e-3 + (5 * se).max()
    # the mean log weight is the ELBO, here known in closed form
    loc, scale = guide.params(x)
    elbo = analytic_elbo(x, w, b, s, loc, scale).double()
    elbo_se = res.log_weights.std(-1) / math.sqrt(4000)
    assert (res.elbo - elbo).abs().max() < (5 * elbo_se).max()
    assert (res.elbo <= res.log_likelihood).all()
    assert (res.log_likelihood <= exact + 5 * se + 1e-3).all()
    assert (elbo < exact - 0.05).all()  # the ELBO is strictly loose here, IW closes the gap
    # an overdispersed proposal has light-tailed weights
    assert (res.khat < 0.5).all()


@torch.no_grad()
def test_iw_log_likelihood_matches_analytic_evidence_gmm_prior():
    """A mixture prior (marginalised) and a mixture guide whose components depend on x."""
    prior = gmm_prior()
    model, w, b, s = linear_gaussian(prior)
    guide = gmm_posterior_guide(prior, w, b, s, inflate=1.6)
    x = torch.cat([data(), torch.tensor([[2.0, 1.0, -1.0], [-2.0, -1.0, 1.5]])])
    ll, log_w = log_likelihood(
        model, guide, x, 4000, chunk_samples=500, batch_size=4, return_log_weights=True
    )
    exact = gmm_evidence(prior, w, b, s, x).double()
    se = iw_standard_error(log_w)
    assert log_w.shape == (6, 4000)
    assert (ll - exact).abs().max() < 1e-3 + (5 * se).max()
    assert float(se.max()) < 0.05  # a good proposal: the check above is tight
    assert (log_w.mean(-1) <= ll).all()
    khat = pareto_khat(log_w)
    assert float((khat > KHAT_THRESHOLD).double().mean()) == 0.0
    # the same evidence from a standard-prior model whose p(z) is swapped for the
    # mixture (how a post-hoc GMM is evaluated), on the same draws
    standard, *_ = linear_gaussian(StandardPrior(D))
    swapped = importance_sampling(
        standard, guide, x, 4000, chunk_samples=500, batch_size=4, prior_log_prob=prior.log_prob
    )
    assert torch.allclose(swapped.log_likelihood, ll)


@torch.no_grad()
def test_khat_flags_an_underdispersed_proposal():
    model, w, b, s = linear_gaussian(StandardPrior(D))
    x = data()
    good = importance_sampling(model, posterior_guide(w, b, s, 1.5), x, 2000, khat=True)
    bad = importance_sampling(model, posterior_guide(w, b, s, 0.3), x, 2000, khat=True)
    frac_good = float((good.khat > KHAT_THRESHOLD).double().mean())
    frac_bad = float((bad.khat > KHAT_THRESHOLD).double().mean())
    assert 0.0 <= frac_good <= frac_bad <= 1.0
    assert frac_good == 0.0 and frac_bad >= 0.75
    # and the estimate from the narrow proposal is the worse one
    exact = log_evidence(x, w, b, s).double()
    assert (bad.log_likelihood - exact).abs().max() > 5 * (good.log_likelihood - exact).abs().max()


@torch.no_grad()
def test_seeded_and_leaves_the_callers_stream_alone():
    model, w, b, s = linear_gaussian(StandardPrior(D))
    guide = posterior_guide(w, b, s, 1.5)
    torch.manual_seed(5)
    a = log_likelihood(model, guide, data(), 200, seed=3)
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(torch.rand(3), after)
    assert torch.equal(log_likelihood(model, guide, data(), 200, seed=3), a)
    assert not torch.equal(log_likelihood(model, guide, data(), 200, seed=4), a)


@torch.no_grad()
def test_batched_sampling_keeps_datapoints_apart():
    """Each datapoint's draws come from its own mixture (Pyro's sample((S,)) mixes them up)."""
    n, k = 7, 3
    locs = (10.0 * torch.arange(n)).view(n, 1, 1).expand(n, k, 2) + torch.randn(n, k, 2)
    q = diag_normal_mixture(locs, torch.full((n, k, 2), 0.1), torch.zeros(n, k))
    z = q.sample((4000,))
    assert z.shape == (4000, n, 2)
    assert torch.allclose(z.mean(0), q.mean, atol=0.1)


@torch.no_grad()
def test_chunking_bounds_the_decoder_batch_and_not_the_result():
    """Peak tensor size: the decoder never sees more than chunk_samples * batch_size codes."""
    model, w, b, s = linear_gaussian(StandardPrior(D))
    guide = posterior_guide(w, b, s, 1.5)
    x = data().repeat(5, 1)  # N = 20
    seen = []
    hook = model.decoder.net.register_forward_hook(lambda mod, inp, out: seen.append(out.numel()))
    try:
        small = importance_sampling(
            model, guide, x, 1000, chunk_samples=64, batch_size=6, khat=True, keep_log_weights=True
        )
    finally:
        hook.remove()
    assert max(seen) == 64 * 6 * P  # (C, B, P) decoder outputs, whatever N and S
    assert len(seen) == math.ceil(20 / 6) * math.ceil(1000 / 64)
    assert small.log_weights.shape == (20, 1000) and small.khat.shape == (20,)
    # the streamed log-sum-exp equals the one over all kept weights
    assert torch.allclose(small.log_likelihood, small.log_weights.logsumexp(-1) - math.log(1000))
    big = importance_sampling(model, guide, x, 1000, chunk_samples=1000, batch_size=20, keep_log_weights=True)
    # different draws, same quantity: both agree with log p(x) within Monte Carlo error
    exact = log_evidence(x, w, b, s).double()
    for res in (small, big):
        assert ((res.log_likelihood - exact).abs() < 5 * iw_standard_error(res.log_weights) + 1e-3).all()


@pytest.mark.parametrize(
    "prior,guide",
    [("gmm", "mixture"), ("vampprior", "mixture"), ("dilokthanakul", "dilokthanakul")],
)
def test_mean_log_weight_is_pyros_elbo(prior, guide, small_digits):
    """Without a guide-side discrete site, mean log w is exactly the ELBO Pyro optimises.

    Checks the densities of every latent the pair has (w and z for dilokthanakul,
    the mixture density of q, the mixture priors summed out) against
    TraceEnum_ELBO on untrained nets, within Monte Carlo error.
    """
    config = TrainConfig(prior=prior, guide=guide, latent_dim=3, components=4, pseudo_inputs=5, hidden=(16,))
    model, guide_ = build(config, 64)
    x = small_digits.test_x[:20]
    s = 1000
    res = importance_sampling(model, guide_, x, s, keep_log_weights=True, seed=1)
    pyro_elbo = evaluate_elbo(model, guide_, x, batch_size=20, num_particles=s, seed=2)
    se = float(res.log_weights.std(-1).mean()) / math.sqrt(s * len(x))
    assert float(res.elbo.mean()) == pytest.approx(pyro_elbo, abs=6 * se)
    assert (res.elbo <= res.log_likelihood).all()
    assert (res.log_likelihood - res.elbo > 0.01).all()  # the IW bound is tighter here


# ----------------------------------------------------------------------------- aggregate posterior


def _constant_guide(dim: int, loc: torch.Tensor, scale: torch.Tensor) -> GaussianGuide:
    """An encoder that ignores x: q(z|x) = N(loc, diag scale^2) for every x."""
    guide = GaussianGuide(P, dim, hidden=())
    with torch.no_grad():
        guide.head.weight.zero_()
        guide.head.bias[:dim] = loc
        guide.head.bias[dim:] = _inv_softplus(scale)
    return guide


@torch.no_grad()
def test_surgery_encoder_that_ignores_x_has_no_information():
    model, *_ = linear_gaussian(StandardPrior(D))
    loc, scale = torch.tensor([0.5, -1.0]), torch.tensor([0.6, 1.3])
    guide = _constant_guide(D, loc, scale)
    x = torch.randn(300, P)
    res = elbo_surgery(model, guide, x, batch_size=64)
    assert abs(res.mutual_information) < 1e-5
    assert res.marginal_kl == pytest.approx(res.avg_kl, abs=1e-5)
    # q(z) is then the Gaussian N(loc, scale^2): its KL to N(0, I) is closed-form
    exact = float(kl_divergence(Normal(loc, scale), Normal(0.0, 1.0)).sum())
    assert abs(res.marginal_kl - exact) < 5 * res.marginal_kl_se
    assert res.mutual_information_bound == pytest.approx(math.log(300))


@torch.no_grad()
def test_surgery_matches_quadrature_in_one_dimension():
    """D = 1: q(z) is a 300-component mixture whose KL to N(0, 1) is a 1-D integral."""
    model = linear_gaussian(StandardPrior(D))[0]
    model.prior = StandardPrior(1)
    guide = GaussianGuide(P, 1, hidden=())
    with torch.no_grad():
        guide.head.weight.copy_(torch.tensor([[0.8, -0.5, 0.3], [0.2, 0.1, -0.3]]))
        guide.head.bias.copy_(torch.tensor([0.3, -0.5]))
    x = torch.randn(300, P)
    res = elbo_surgery(model, guide, x, batch_size=64)
    loc, scale = guide.params(x)  # (N, 1)
    grid = torch.linspace(-12, 12, 24001, dtype=torch.float64)
    comps = Normal(loc.double().T, scale.double().T)  # (1, N) against grid (G, 1)
    log_q = comps.log_prob(grid[:, None]).logsumexp(-1) - math.log(len(x))
    log_p = Normal(0.0, 1.0).log_prob(grid)
    marginal_kl = float(torch.trapezoid(log_q.exp() * (log_q - log_p), grid))
    avg_kl = float(kl_divergence(Normal(loc.double(), scale.double()), Normal(0.0, 1.0)).mean())
    assert abs(res.marginal_kl - marginal_kl) < 5 * res.marginal_kl_se
    assert abs(res.avg_kl - avg_kl) < 5 * res.avg_kl_se
    assert abs(res.mutual_information - (avg_kl - marginal_kl)) < 5 * res.mutual_information_se
    assert res.avg_kl == pytest.approx(res.mutual_information + res.marginal_kl, abs=1e-9)
    assert 0.05 < avg_kl - marginal_kl < math.log(300)  # a case in the interior


@torch.no_grad()
def test_surgery_well_separated_codes_reach_log_n():
    model, *_ = linear_gaussian(StandardPrior(D))
    guide = GaussianGuide(P, D, hidden=())
    with torch.no_grad():
        guide.head.weight.zero_()
        guide.head.weight[0, 0] = 100.0  # z1 = 100 x1: codes far apart ...
        guide.head.bias[D:] = _inv_softplus(torch.full((D,), 0.01))  # ... and narrow
    x = torch.zeros(50, P)
    x[:, 0] = torch.arange(50.0)
    res = elbo_surgery(model, guide, x, num_points=20)
    assert res.num_points == 20
    assert res.mutual_information == pytest.approx(math.log(50), abs=1e-4)
    assert res.mutual_information <= res.mutual_information_bound + 1e-9


@torch.no_grad()
def test_aggregate_log_prob_is_chunk_independent_for_mixture_guides():
    torch.manual_seed(2)
    for dim in (1, 2):  # UnivariateMixtureOfNormals and MixtureOfDiagNormals
        guide = MixtureGuide(P, dim, 3, hidden=(4,))
        x, z = torch.randn(37, P), torch.randn(11, dim)
        # brute force: the (M, N) matrix of log q(z_i | x_n), one datapoint at a time
        direct = torch.stack([guide.q_z(x[n : n + 1]).log_prob(z) for n in range(len(x))], -1)
        expected = direct.double().logsumexp(-1) - math.log(len(x))
        for batch, budget in ((37, 2**20), (5, 30), (1, 1)):
            got = aggregate_log_prob(guide, x, z, batch_size=batch, max_elements=budget)
            assert torch.allclose(got, expected, atol=1e-5), (dim, batch, budget)


@torch.no_grad()
def test_active_units_counts_dimensions_whose_mean_moves_with_x():
    guide = GaussianGuide(P, 3, hidden=())
    with torch.no_grad():
        guide.head.weight.zero_()
        guide.head.weight[0, 0] = 1.0  # Var ~ 1
        guide.head.weight[1, 0] = 0.05  # Var ~ 0.0025: below 0.01
    x = torch.randn(500, P)
    units = active_units(guide, x, batch_size=64)
    v = x[:, 0].var()
    assert torch.allclose(units.variances, torch.stack([v, 0.0025 * v, torch.tensor(0.0)]), atol=1e-6)
    assert units.count == 1
    assert active_units(guide, x, threshold=1e-3).count == 2


def _rbf_mmd2_by_blocks(a: torch.Tensor, b: torch.Tensor, ell: float) -> float:
    from sklearn.metrics.pairwise import rbf_kernel

    gamma = 1 / (2 * ell**2)
    kaa, kbb, kab = (rbf_kernel(u.numpy(), v.numpy(), gamma=gamma) for u, v in ((a, a), (b, b), (a, b)))
    m, n = len(a), len(b)
    return (
        (kaa.sum() - np.trace(kaa)) / (m * (m - 1))
        + (kbb.sum() - np.trace(kbb)) / (n * (n - 1))
        - 2 * kab.mean()
    )


def test_mmd_same_distribution_is_small_different_is_significant():
    torch.manual_seed(0)
    a, b = torch.randn(300, 2, dtype=torch.float64), torch.randn(250, 2, dtype=torch.float64)
    same = mmd_test(a, b, seed=1)
    assert same.mmd2 == pytest.approx(_rbf_mmd2_by_blocks(a, b, same.bandwidth), abs=1e-10)
    assert abs(same.mmd2) < 0.01 and same.pvalue > 0.05
    shifted = mmd_test(a, b + torch.tensor([0.5, 0.0], dtype=torch.float64), seed=1)
    assert shifted.mmd2 == pytest.approx(
        _rbf_mmd2_by_blocks(a, b + torch.tensor([0.5, 0.0]), shifted.bandwidth)
    )
    assert shifted.mmd2 > 10 * abs(same.mmd2)
    assert shifted.pvalue == pytest.approx(1 / 201)
    # under the null the p-value is roughly uniform: few of 40 independent tests reject at 10%
    pvals = [
        mmd_test(torch.randn(60, 2), torch.randn(60, 2), num_permutations=99, seed=i).pvalue
        for i in range(40)
    ]
    assert 0 <= sum(p <= 0.1 for p in pvals) <= 10


# ----------------------------------------------------------------------------- trained runs


@pytest.fixture(scope="module")
def tiny_runs(small_digits, tmp_path_factory) -> dict[str, str]:
    """Two tiny trained runs: gmm x categorical (a discrete component) and
    posthoc-gmm x gaussian (none; trained as standard, with a GMM fitted to q(z))."""
    runs = {}
    for prior, guide in (("gmm", "categorical"), ("posthoc-gmm", "gaussian")):
        out = tmp_path_factory.mktemp(f"{prior}-{guide}")
        cfg = TrainConfig(
            prior=prior,
            guide=guide,
            hidden=(32,),
            latent_dim=3,
            components=4,
            epochs=2,
            batch_size=50,
            lr=3e-3,
            out=str(out),
        )
        train(cfg, dataset=small_digits, progress=False, figures=False)
        runs[prior] = str(out)
    return runs


def test_sample_quality_scores(tiny_runs, small_digits):
    run = load_run(tiny_runs["gmm"])
    clf = fit_sample_classifier(small_digits.train_x, small_digits.train_y)
    real = score_images(clf, small_digits.test_x)
    grey = score_images(clf, torch.full((50, 64), 0.5))
    assert real.mean_max_prob > 0.6 and real.class_entropy > 2.1  # confident and diverse
    assert grey.class_entropy == 0.0 and grey.class_entropy_max == pytest.approx(math.log(10))
    assert {"prior", "aggregate", "posthoc-gmm"} <= set(SOURCES)
    q = sample_quality(run, small_digits, clf, num_samples=300, seed=0)
    again = sample_quality(run, small_digits, clf, num_samples=300, seed=0)
    assert set(q) == set(SOURCES)
    for name, s in q.items():
        assert s.images.shape == (300, 64)
        assert 0.1 <= s.mean_max_prob <= 1.0
        assert 0.0 <= s.class_entropy <= math.log(10) + 1e-12
        assert sum(s.class_histogram) == pytest.approx(1.0)
        assert s.to_dict() == again[name].to_dict()
        # blurry samples from a 2-epoch model: less confident than real digits
        assert s.mean_max_prob < real.mean_max_prob
    # draws of the aggregate posterior come from q(z|x) of the training data
    z = draw_aggregate_posterior(run.guide, small_digits.train_x, 2000, seed=0).z
    means = run.guide.q_z(small_digits.train_x).mean.detach()
    assert torch.allclose(z.mean(0), means.mean(0), atol=0.1)


def test_to_inference_data(tiny_runs, small_digits):
    run = load_run(tiny_runs["posthoc-gmm"])
    idata = to_inference_data(run, small_digits.test_x, num_draws=400)
    assert idata.prior["z"].dims == ("chain", "draw", "latent")
    assert idata.posterior["z"].shape == (1, 400, 3)
    assert idata.prior["z"].shape == (1, 400, 3)
    # prior draws are N(0, I)
    assert np.abs(idata.prior["z"].values.mean((0, 1))).max() < 0.2
    assert np.abs(idata.prior["z"].values.std((0, 1)) - 1).max() < 0.15
    lines = (Path(tiny_runs["posthoc-gmm"]) / "metrics.jsonl").read_text().splitlines()
    metrics = [json.loads(line) for line in lines]
    np.testing.assert_allclose(
        idata.sample_stats["train_loss"].values[0, 0], [m["train_loss"] for m in metrics]
    )
    assert list(idata.sample_stats["epoch"].values) == [1, 2]


EXPECTED_PNG = {  # (height, width) in pixels: figsize * 100 dpi, fixed by each figure's layout
    "eval_latent_densities.png": (320, 900),  # 3 dimensions: 1 row of 3 panels
    "eval_latent_projection.png": (500, 650),
    "eval_khat.png": (400, 600),
    "eval_confusion.png": (550, 650),
    "eval_samples_by_source.png": (390, 1280),  # prior, aggregate, posthoc-gmm, data
    "eval_component_samples.png": (340, 720),  # 4 components x 10 draws
}


@pytest.mark.parametrize("prior", ["gmm", "posthoc-gmm"])
def test_evaluate_run_end_to_end(tiny_runs, small_digits, prior):
    run_dir = tiny_runs[prior]
    res = evaluate_run(run_dir, iw_samples=300, dataset=small_digits, num_draws=300, mmd_permutations=100)
    assert res == json.loads((Path(run_dir) / "evaluation.json").read_text())
    n = len(small_digits.test_x)
    assert res["num_points"] == n and res["iw_samples"] == 300
    for key in ("elbo", "log_likelihood", "khat_over_0_7", "avg_kl", "mutual_information", "marginal_kl"):
        assert isinstance(res[key], float) and math.isfinite(res[key]), key
    # bounds: ELBO <= IW estimate (Jensen, per datapoint for the marginal ELBO)
    assert res["elbo"] <= res["log_likelihood"]
    assert res["elbo_marginal"] <= res["log_likelihood"]
    assert -200 < res["elbo"] < 0  # nats per 64-pixel digit
    assert res["mutual_information_bound"] == pytest.approx(math.log(n))
    tol = 4 * res["mutual_information_se"] + 1e-6
    assert -tol <= res["mutual_information"] <= math.log(n) + 1e-9
    assert res["avg_kl"] == pytest.approx(res["mutual_information"] + res["marginal_kl"], abs=1e-9)
    assert res["marginal_kl"] > -4 * res["marginal_kl_se"]
    assert 0.0 <= res["khat_over_0_7"] <= 1.0
    assert 0 <= res["active_units"] <= 3
    assert res["active_units"] == sum(v > 0.01 for v in res["latent_variances"])
    assert 0 < res["mmd_pvalue"] <= 1 and res["mmd_bandwidth"] > 0
    clustering = res["clustering"]
    assert ("model" in clustering) == (prior == "gmm")
    k = 4 if prior == "gmm" else 10
    assert clustering["num_clusters"] == k
    for scores in (v for v in clustering.values() if isinstance(v, dict)):
        assert 0.0 <= scores["acc_hungarian"] <= scores["acc_majority"] <= 1.0
        assert 1 <= scores["n_clusters_used"] <= k
    assert clustering["kmeans"]["acc_hungarian"] > 0.1  # better than nothing on digits codes
    assert set(res["sample_quality"]) == {*SOURCES, "data"}
    for s in res["sample_quality"].values():
        assert 0.1 <= s["mean_max_prob"] <= 1 and 0 <= s["class_entropy"] <= math.log(10) + 1e-12
    assert res["classifier"]["test_accuracy"] > 0.8
    if prior == "posthoc-gmm":  # log p(x) with the fitted GMM as p(z), too
        post = res["posthoc_gmm"]
        assert post["num_components"] == 10
        assert post["elbo_marginal"] <= post["log_likelihood"]
        assert abs(post["log_likelihood"] - res["log_likelihood"]) < 5  # same decoder, another p(z)
    else:
        assert "posthoc_gmm" not in res

    az = import_arviz()
    idata = az.from_netcdf(f"{run_dir}/inference_data.nc")
    assert idata.posterior["z"].shape == (1, 300, 3)
    assert idata.sample_stats["train_loss"].shape == (1, 1, 2)

    from matplotlib.image import imread

    assert set(EXPECTED_PNG) == set(FIGURE_NAMES)
    expected = {k: v for k, v in EXPECTED_PNG.items() if prior == "gmm" or k != "eval_component_samples.png"}
    assert sorted(res["figures"]) == sorted(expected)
    for name, (h, w) in expected.items():
        img = imread(f"{run_dir}/{name}")
        assert img.shape[:2] == (h, w), name
        ink = (img[..., :3] < 0.9).any(-1).mean()  # fraction of pixels that are not white
        assert 0.01 < ink < 0.99, name


def test_evaluate_run_refuses_an_unknown_split(tiny_runs):
    from mixvae.errors import ConfigError

    with pytest.raises(ConfigError, match="split must be"):
        evaluate_run(tiny_runs["gmm"], split="validation")


def test_a_guide_without_a_closed_form_mean_trains_and_evaluates_with_figures(small_digits, tmp_path):
    """A flow-like q(z|x) (a TransformedDistribution: no .mean): figures and evaluate use a sample mean."""
    import pyro.distributions as dist

    from mixvae import GUIDES, TrainConfig, evaluate_run, train

    class StretchedGaussian(GUIDES["gaussian"]):
        def z_dist(self, h, values):
            base = super().z_dist(h, values)
            return dist.TransformedDistribution(base, [dist.transforms.AffineTransform(0.0, 2.0)])

    GUIDES.register("stretched-test")(StretchedGaussian)
    try:
        with pytest.raises(NotImplementedError):
            _ = StretchedGaussian(64, 2, (8,)).q_z(small_digits.test_x[:3]).mean
        config = TrainConfig(
            prior="gmm",
            guide="stretched-test",
            latent_dim=2,
            components=3,
            hidden=(16,),
            epochs=1,
            out=str(tmp_path),
        )
        run = train(config, dataset=small_digits, progress=False, figures=True)
        assert (tmp_path / "latent_scatter.png").is_file() and (tmp_path / "reconstructions.png").is_file()
        assert run.guide.q_mean(small_digits.test_x[:4]).shape == (4, 2)
        result = evaluate_run(
            tmp_path, iw_samples=5, dataset=small_digits, num_draws=100, mmd_permutations=10
        )
        assert result["active_units"] >= 0 and (tmp_path / "evaluation.json").is_file()
    finally:
        GUIDES.drop_module(StretchedGaussian.__module__)
