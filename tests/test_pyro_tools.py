"""Pyro's own tools on mixvae's objects: Predictive, infer_discrete, the site check at build time."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Predictive, infer_discrete

from mixvae import GUIDES, PRIORS, TrainConfig, build
from mixvae.build import check_sites, compatible_priors
from mixvae.distributions import MixtureOfDiagNormals
from mixvae.errors import SiteDeclarationError
from mixvae.guides import GaussianGuide
from mixvae.inference import infer_components
from mixvae.models import VAE, BernoulliDecoder, Prior
from mixvae.models.posthoc import PosthocGMM
from mixvae.sites import Site

VALID = [(p, g) for p in PRIORS.names() for g in GUIDES.names() if p in compatible_priors(g)]
DISCRETE = [(p, g) for p, g in VALID if PRIORS[p].enumerated_sites]
SETTINGS = dict(hidden=(8,), latent_dim=3, components=4, guide_components=3, pseudo_inputs=5)
P = 12


def _pair(prior: str, guide: str):
    return build(TrainConfig(prior=prior, guide=guide, **SETTINGS), P)


def _x(n: int = 6) -> torch.Tensor:
    return torch.bernoulli(torch.rand(n, P, generator=torch.Generator().manual_seed(1)))


# ----------------------------------------------------------------------------- Predictive


@pytest.mark.parametrize("prior,guide", VALID)
def test_predictive_draws_from_the_prior_and_the_posterior(prior, guide):
    model, g = _pair(prior, guide)
    latent = model.prior.latent_sites
    for parallel in (False, True):
        draws = Predictive(model, num_samples=4, parallel=parallel)(batch_size=5)
        assert set(draws) == {*latent, "x"}
        assert draws["x"].shape == (4, 5, P) and draws["z"].shape == (4, 5, 3)
        assert set(draws["x"].unique().tolist()) <= {0.0, 1.0}  # Bernoulli draws, not means
    assert Predictive(model, num_samples=2)()["x"].shape == (2, 1, P)  # x defaults to None: one point a draw
    # the posterior predictive: z from the guide, x redrawn from the decoder
    x = _x()
    post = Predictive(poutine.uncondition(model), guide=g, num_samples=3)(x)
    assert post["x"].shape == (3, 6, P) and post["z"].shape == (3, 6, 3)
    assert not torch.equal(post["x"][0], x)


def test_predictive_draws_follow_the_mixture_prior():
    model, _ = build(TrainConfig(prior="gmm", guide="gaussian", hidden=(8,), latent_dim=2, components=3), P)
    with torch.no_grad():
        model.prior.locs.copy_(torch.tensor([[-10.0, 0.0], [0.0, 10.0], [10.0, 0.0]]))
        model.prior.logits = torch.tensor([0.5, 0.3, 0.2]).log()
    draws = Predictive(model, num_samples=4000, parallel=True)()
    y, z = draws["y"].reshape(-1), draws["z"].reshape(-1, 2)
    freq = torch.bincount(y, minlength=3) / len(y)
    torch.testing.assert_close(freq, torch.tensor([0.5, 0.3, 0.2]), atol=0.03, rtol=0)
    torch.testing.assert_close(z[y == 1].mean(0), torch.tensor([0.0, 10.0]), atol=0.1, rtol=0)


def test_the_fitted_posthoc_gmm_is_the_models_prior():
    model, guide = _pair("posthoc-gmm", "gaussian")
    prior = model.prior
    gmm = PosthocGMM(
        torch.tensor([0.25, 0.75]),
        torch.tensor([[5.0, 5, 5], [-5, -5, -5]]),
        0.01 * torch.eye(3).expand(2, 3, 3),
    )
    z0 = Predictive(model, num_samples=2000, parallel=True)()["z"].reshape(-1, 3)
    assert z0.mean(0).abs().max() < 0.15  # N(0, I) before the fit
    prior.set_gmm(gmm)
    z = Predictive(model, num_samples=2000, parallel=True)()["z"].reshape(-1, 3)
    assert ((z[:, 0] > 0).float().mean() - 0.25).abs() < 0.03  # the GMM's components and weights
    assert (z.abs() - 5).abs().max() < 0.6
    probe = torch.zeros(4, 3)
    torch.testing.assert_close(prior.log_prob({"z": probe}), gmm.distribution().log_prob(probe))
    with prior.as_trained():  # N(0, I) for the numbers of the prior as trained
        torch.testing.assert_close(
            prior.log_prob({"z": probe}), dist.Normal(0.0, 1.0).log_prob(probe).sum(-1)
        )
        assert Predictive(model, num_samples=500, parallel=True)()["z"].abs().mean() < 1.0
    # the Pyro model scores with the GMM too: its trace's log p(z) is the GMM's
    x = _x()
    guide_trace = poutine.trace(guide).get_trace(x)
    trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    torch.testing.assert_close(
        trace.nodes["z"]["fn"].log_prob(trace.nodes["z"]["value"]),
        gmm.distribution().log_prob(guide_trace.nodes["z"]["value"]),
    )


def test_a_trained_posthoc_run_samples_its_gmm_from_the_pyro_model(small_digits, tmp_path):
    from mixvae import load_run, train
    from mixvae.runs.folder import load_posthoc_gmm

    config = TrainConfig(
        prior="posthoc-gmm", guide="gaussian", hidden=(16,), latent_dim=2, epochs=1, posthoc_components=3,
        out=str(tmp_path),
    )  # fmt: skip
    run = train(config, dataset=small_digits, progress=False, figures=False)
    gmm = load_posthoc_gmm(tmp_path)
    assert run.model.prior.fitted and load_run(tmp_path).model.prior.fitted
    z = Predictive(load_run(tmp_path).model, num_samples=3000, parallel=True)()["z"].reshape(-1, 2)
    torch.testing.assert_close(z.mean(0), gmm.distribution().mean, atol=0.1, rtol=0.1)


# ----------------------------------------------------------------------------- infer_discrete


@pytest.mark.parametrize("prior,guide", DISCRETE)
def test_infer_components_is_the_exact_posterior_of_the_component(prior, guide):
    model, g = _pair(prior, guide)
    x = _x(300)
    latents = {k: q.sample() for k, q in g.q_latents(x).items()}
    exact = model.prior.component_log_posterior(latents).exp()  # (N, K)
    y = infer_components(model, g, x, latents=latents)
    assert y.shape == (300,) and torch.equal(y, exact.argmax(-1))  # MAP: every point
    draws = torch.stack([infer_components(model, g, x, latents=latents, temperature=1) for _ in range(200)])
    freq = torch.nn.functional.one_hot(draws, exact.shape[-1]).float().mean(0)  # (N, K)
    error = (freq - exact).abs()  # a frequency of 200 draws has sd <= 0.035
    assert error.mean() < 0.03 and error.max() < 0.2
    assert infer_components(model, g, x).shape == (300,)  # latents drawn from the guide


def test_the_tutorials_replay_pattern_is_a_pyro_limit_that_conditioning_avoids():
    """The documented reason for infer_components: Pyro itself fails on replay, in five lines of plain Pyro."""
    locs = torch.randn(3, 2)

    def model(x):
        with pyro.plate("data", len(x)):
            y = pyro.sample("y", dist.Categorical(logits=torch.zeros(3)), infer={"enumerate": "parallel"})
            z = pyro.sample("z", dist.Normal(locs[y], 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(x, 1.0).to_event(1))

    x = torch.randn(6, 2)
    guide_trace = poutine.trace(guide).get_trace(x)
    with pytest.raises(ValueError, match="packing tensors at site 'z'"):
        poutine.trace(
            infer_discrete(poutine.replay(model, trace=guide_trace), first_available_dim=-2)
        ).get_trace(x)
    z = guide_trace.nodes["z"]["value"]
    conditioned = infer_discrete(
        poutine.condition(model, data={"z": z}), first_available_dim=-2, temperature=0
    )
    y = poutine.trace(conditioned).get_trace(x).nodes["y"]["value"]
    assert torch.equal(y, dist.Normal(locs, 1.0).log_prob(z.unsqueeze(-2)).sum(-1).argmax(-1))


def test_infer_components_refuses_a_prior_without_a_component():
    from mixvae.errors import ConfigError

    model, g = _pair("standard", "gaussian")
    with pytest.raises(ConfigError, match="no discrete component"):
        infer_components(model, g, _x())


# ----------------------------------------------------------------------------- the site check


class _Forgets(Prior):
    """z | y ~ N(mu_y, I), but only z is declared."""

    sites = (Site("z", "z_dist"),)
    name = "forgets-y"

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        self.locs = torch.nn.Parameter(torch.randn(4, latent_dim))

    def z_dist(self, values: Mapping[str, torch.Tensor]) -> dist.TorchDistribution:
        return dist.Normal(self.locs[values["y"]], 1.0).to_event(1)


class _NoEvent(Prior):
    sites = (Site("z", "z_dist"),)
    name = "no-event"

    def z_dist(self, values: Mapping[str, torch.Tensor]) -> dist.TorchDistribution:
        return dist.Normal(torch.zeros(self.latent_dim), 1.0)  # batch (D,): .to_event(1) forgotten


class _WideGuide(GaussianGuide):
    """Three Gaussians per point left in the batch shape, (3, B), instead of mixed into one q(z|x)."""

    def z_dist(self, h: torch.Tensor, values: Mapping[str, torch.Tensor]) -> dist.TorchDistribution:
        loc = h[..., : self.latent_dim]
        return dist.Normal(loc.expand((3, *loc.shape)), 1.0).to_event(1)


class _Undeclared(Prior):
    sites = (Site("z", "z_dist"),)
    name = "undeclared"

    def z_dist(self, values: Mapping[str, torch.Tensor]) -> dist.TorchDistribution:
        return dist.Normal(torch.zeros(self.latent_dim), 1.0).to_event(1)

    def forward(self, component: torch.Tensor | None = None) -> torch.Tensor:
        scale = pyro.sample("s", dist.LogNormal(0.0, 1.0))
        return pyro.sample("z", dist.Normal(torch.zeros(self.latent_dim), scale.unsqueeze(-1)).to_event(1))


class _Unmarked(Prior):
    sites = (Site("y", "y_dist", enumerated=True), Site("z", "z_dist"))
    name = "unmarked"

    def y_dist(self, values: Mapping[str, torch.Tensor]) -> dist.TorchDistribution:
        return dist.Categorical(logits=torch.zeros(4))

    def z_dist(self, values: Mapping[str, torch.Tensor]) -> dist.TorchDistribution:
        return dist.Normal(values["y"].float().unsqueeze(-1).expand(values["y"].shape + (3,)), 1.0).to_event(
            1
        )

    def forward(self, component: torch.Tensor | None = None) -> torch.Tensor:
        y = pyro.sample("y", self.y_dist({}))  # no infer={"enumerate": "parallel"}
        return pyro.sample("z", self.z_dist({"y": y}))


@pytest.mark.parametrize(
    "prior_cls,match",
    [
        (_Forgets, r"reads the site 'y', which is not declared.*enumerated=True"),
        (_NoEvent, r"Shape mismatch inside plate\('data'\) at site z.*to_event\(1\)"),
        (_Undeclared, r"samples the latent site 's' but does not declare it"),
        (_Unmarked, r"declares 'y' enumerated but its program does not mark it"),
    ],
)
def test_a_program_that_differs_from_its_declaration_is_one_line(prior_cls, match):
    model = VAE(prior_cls(3), BernoulliDecoder(3, P, (8,)))
    guide = GaussianGuide(P, 3, (8,))
    with pytest.raises(SiteDeclarationError, match=match) as info:
        check_sites(model, guide)
    assert "\n" not in str(info.value)


def test_a_site_with_extra_batch_dimensions_is_one_line():
    model = VAE(PRIORS["standard"](3), BernoulliDecoder(3, P, (8,)))
    with pytest.raises(
        SiteDeclarationError, match=r"guide .* site 'z' has batch shape \(3, 2\) for 2 points"
    ) as info:
        check_sites(model, _WideGuide(P, 3, (8,)))
    assert "\n" not in str(info.value)


def test_the_builtin_pairs_pass_the_site_check():
    for prior, guide in VALID:  # build() runs it; the reference model in plain Pyro would fail above
        check_sites(*_pair(prior, guide))


def test_the_site_check_leaves_the_random_stream_untouched():
    """The probe trace draws from a forked stream: a run's training draws the same numbers as
    without the check (it once shifted them, and with them every run's outcome)."""
    for prior, guide in VALID:
        model, guide_ = _pair(prior, guide)
        torch.manual_seed(3)
        check_sites(model, guide_)
        after = torch.rand(4)
        torch.manual_seed(3)
        assert torch.equal(after, torch.rand(4)), (prior, guide)


def test_the_site_check_runs_at_build_time(monkeypatch):
    monkeypatch.setitem(PRIORS._entries, "no-event", _NoEvent)
    with pytest.raises(SiteDeclarationError, match="to_event"):
        build(TrainConfig(prior="no-event", guide="gaussian", hidden=(8,), latent_dim=3), P)


# ----------------------------------------------------------------------------- saving and loading

_SAVE = """
import sys, torch, pyro
from pyro.infer import SVI
from mixvae import TrainConfig, build, save_model
from mixvae.inference import DirectELBO
for prior in ("standard", "vampprior"):  # other builds first: Pyro's names carry a process-wide counter
    build(TrainConfig(prior=prior, guide="mixture", hidden=(8,)), 12)
torch.manual_seed(0)
x = torch.bernoulli(torch.rand(20, 12))
model, guide = build(TrainConfig(prior="gmm", guide="categorical", hidden=(8,), latent_dim=3, components=4), 12)
svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), DirectELBO())
for _ in range(5):
    svi.step(x, num_data=20)
save_model(sys.argv[1], model, guide)
z = torch.randn(7, 3)
with torch.no_grad():
    torch.save({"x": x, "z": z, "q": guide.q_z(x).mean, "pz": model.prior.log_prob({"z": z}),
                "px": model.decoder.mean(z), "pi": guide.component_logits(x)}, sys.argv[2])
"""

_LOAD = """
import sys, torch, pyro
from pyro.infer import SVI
from mixvae import TrainConfig, build, load_model
from mixvae.inference import DirectELBO
build(TrainConfig(prior="dilokthanakul", guide="dilokthanakul", hidden=(8,)), 12)  # other builds first
model, guide = load_model(sys.argv[1])
ref = torch.load(sys.argv[2])
x, z = ref["x"], ref["z"]
with torch.no_grad():
    assert torch.equal(guide.q_z(x).mean, ref["q"]) and torch.equal(guide.component_logits(x), ref["pi"])
    assert torch.equal(model.prior.log_prob({"z": z}), ref["pz"]) and torch.equal(model.decoder.mean(z), ref["px"])
before = [p.detach().clone() for p in [*model.parameters(), *guide.parameters()]]
svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), DirectELBO())
for _ in range(2):
    svi.step(x, num_data=20)
after = [*model.parameters(), *guide.parameters()]
moved = sum(not torch.equal(a, b.detach()) for a, b in zip(before, after))
assert moved == len(before), (moved, len(before))  # continued SVI moves every weight, networks included
print("round trip ok", len(before))
"""


def test_save_and_load_round_trip_in_a_fresh_process(tmp_path):
    import subprocess
    import sys

    path, ref = tmp_path / "model.pt", tmp_path / "ref.pt"
    for script in (_SAVE, _LOAD):
        out = subprocess.run(
            [sys.executable, "-c", script, str(path), str(ref)], capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, out.stderr[-2000:]
    assert "round trip ok" in out.stdout


def test_save_model_keeps_a_fitted_posthoc_gmm_and_needs_a_config(tmp_path):
    from mixvae import load_model, save_model
    from mixvae.errors import ConfigError

    model, guide = _pair("posthoc-gmm", "gaussian")
    gmm = PosthocGMM(torch.tensor([0.5, 0.5]), torch.randn(2, 3), torch.eye(3).expand(2, 3, 3).clone())
    model.prior.set_gmm(gmm)
    save_model(tmp_path / "m.pt", model, guide)
    loaded, _ = load_model(tmp_path / "m.pt")
    assert loaded.prior.fitted
    torch.testing.assert_close(loaded.prior.marginal().mean, gmm.distribution().mean)
    bare = VAE(PRIORS["standard"](3), BernoulliDecoder(3, P, (8,)))
    with pytest.raises(ConfigError, match="pass config="):
        save_model(tmp_path / "n.pt", bare, guide)


def test_a_loaded_parameter_store_is_refused_by_build(tmp_path, monkeypatch):
    """Pyro's store, loaded from a file, would feed some parameters of a new pair and not others."""
    import itertools

    import mixvae.nn
    from mixvae.errors import ConfigError

    model, guide = _pair("gmm", "gaussian")
    svi = pyro.infer.SVI(
        model, guide, pyro.optim.Adam({"lr": 0.01}), pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)
    )
    svi.step(_x())
    pyro.get_param_store().save(tmp_path / "store.pt")
    pyro.clear_param_store()
    pyro.get_param_store().load(tmp_path / "store.pt")
    # the names a fresh process would give the same build again
    first = int(guide._pyro_name.removeprefix("gaussianguide"))
    monkeypatch.setattr(mixvae.nn, "_instance_ids", itertools.count(first))
    with pytest.raises(ConfigError, match="clear_param_store"):
        _pair("gmm", "gaussian")


# ----------------------------------------------------------------------------- JIT


JIT_DEPRECATED = "ignore:`torch.jit.trace` is deprecated:DeprecationWarning"


@pytest.mark.filterwarnings(JIT_DEPRECATED)
@pytest.mark.parametrize("prior,guide", VALID)
def test_pyros_jit_elbo_compiles_every_pair_and_equals_the_eager_elbo(prior, guide):
    """The ELBO --jit uses for the pair (JitTraceEnum_ELBO, or JitTraceMeanField_ELBO where nothing is
    enumerated): the same draws, loss and gradients as its eager twin, compiled once per batch shape."""
    from mixvae.inference import make_elbo
    from mixvae.inference.objectives import has_discrete_site

    model, g = _pair(prior, guide)
    enumerates = has_discrete_site(model, g)
    eager, jit = make_elbo(enumerates=enumerates), make_elbo(enumerates=enumerates, jit=True)
    # the mixture guide's draw under JIT has the same value and another (unbiased) gradient, see
    # test_the_traceable_mixture_draw_has_the_right_distribution_and_gradient
    mixture_q = isinstance(g.q_z(_x()), MixtureOfDiagNormals)
    params = [*model.parameters(), *([] if mixture_q else g.parameters())]
    for call, n in enumerate((6, 6, 4)):  # the first call traces; a new batch size is traced again
        x = torch.bernoulli(torch.rand(n, P, generator=torch.Generator().manual_seed(call)))
        results = []
        for elbo in (eager, jit):
            torch.manual_seed(10 + call)
            loss = elbo.differentiable_loss(model, g, x, num_data=60)
            results.append((loss, torch.autograd.grad(loss, params, allow_unused=True)))
        if call == 0:
            compiled = jit._differentiable_loss
            continue  # tracing runs the programs once more, with other draws
        assert jit._differentiable_loss is compiled  # not traced again at every call (Pyro 1.9's bug)
        torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-4)
        for a, b in zip(results[1][1], results[0][1], strict=True):
            if a is not None and b is not None:
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("d", [1, 3])
def test_the_traceable_mixture_draw_has_the_right_distribution_and_gradient(d):
    """pathwise_mixture_sample (what the mixture guide draws under JIT) against the closed form and Pyro's."""
    from mixvae.distributions import pathwise_mixture_sample

    gen = torch.Generator().manual_seed(0)
    locs = torch.randn(3, d, generator=gen).requires_grad_()
    raw = (0.3 * torch.randn(3, d, generator=gen)).requires_grad_()
    logits = torch.randn(3, generator=gen).requires_grad_()
    n = 200_000

    def closed_form():  # E[sum_d z_d^2 + sum_d z_d] = sum_k w_k sum_d (mu^2 + sigma^2 + mu)
        w = logits.softmax(-1)
        return (w * (locs**2 + raw.exp() ** 2 + locs).sum(-1)).sum()

    exact = torch.autograd.grad(closed_form(), (locs, raw, logits))
    torch.manual_seed(1)
    z = pathwise_mixture_sample(locs, raw.exp(), logits, torch.Size([n]))
    assert z.shape == (n, d)
    estimate = torch.autograd.grad((z**2 + z).sum(-1).mean(), (locs, raw, logits))
    for a, b in zip(estimate, exact, strict=True):
        torch.testing.assert_close(a, b, atol=0.05, rtol=0.05)
    torch.testing.assert_close(z.mean(0), (logits.softmax(-1)[:, None] * locs).sum(0), atol=0.02, rtol=0)
    if d > 1:  # Pyro's own estimator (another velocity field) has the same expectation
        torch.manual_seed(1)
        theirs = MixtureOfDiagNormals(locs, raw.exp(), logits).expand(torch.Size([n])).rsample()
        pyro_grads = torch.autograd.grad((theirs**2 + theirs).sum(-1).mean(), (locs, raw, logits))
        for a, b in zip(estimate, pyro_grads, strict=True):
            torch.testing.assert_close(a, b, atol=0.05, rtol=0.05)


def test_training_with_jit(small_digits, tmp_path):
    from mixvae import train
    from mixvae.errors import ConfigError

    config = TrainConfig(
        prior="gmm", guide="mixture", hidden=(16,), latent_dim=3, components=3, epochs=2, jit=True,
        out=str(tmp_path),
    )  # fmt: skip
    run = train(config, dataset=small_digits, progress=False, figures=False)
    assert run.summary["objective"] == "pyro jit"
    for bad, match in (
        (dict(jit=True, objective="iwae", particles=2), "--objective iwae is not one of them"),
        (dict(jit=True, warmup_epochs=2.0), "drop --warmup-epochs or --jit"),
    ):
        with pytest.raises(ConfigError, match=match):
            TrainConfig(**bad).validate()


# ----------------------------------------------------------------------------- the ELBO table


def _pyro_elbo(name: str, particles: int):
    from pyro import infer

    if name == "RenyiELBO":  # K = 2 importance samples a call, not particles of an average
        return infer.RenyiELBO(num_particles=2, max_plate_nesting=1)
    kwargs = dict(max_plate_nesting=1, num_particles=particles, vectorize_particles=particles > 1)
    if "Enum" in name:
        kwargs["strict_enumeration_warning"] = False
    if name.startswith("Jit"):
        kwargs["ignore_jit_warnings"] = True
    return getattr(infer, name)(**kwargs)


@pytest.mark.filterwarnings(JIT_DEPRECATED)
@pytest.mark.filterwarnings("ignore::UserWarning")  # Pyro's "found non-reparameterized sites" etc.
@pytest.mark.parametrize("prior,guide", VALID)
def test_the_elbo_table_says_what_each_of_pyros_elbos_computes(prior, guide):
    from mixvae.inference.elbos import ELBO_NAMES, elbo_verdict

    model, g = _pair(prior, guide)
    x = _x(4)

    def estimate(name: str, repeats: int = 20) -> tuple[float, float]:
        elbo = _pyro_elbo(name, 20)
        # the JIT ELBO compiles differentiable_loss (its loss is the eager one)
        score = (
            (lambda: elbo.differentiable_loss(model, g, x))
            if name.startswith("Jit")
            else (lambda: elbo.loss(model, g, x))
        )
        values = torch.tensor([-float(score()) for _ in range(repeats)])
        return float(values.mean()), float(values.std() / math.sqrt(repeats))

    with pyro.get_param_store().scope():
        ref, ref_se = estimate("TraceEnum_ELBO")
        for name in ELBO_NAMES:
            verdict = elbo_verdict(PRIORS[prior], GUIDES[guide], name).verdict
            if verdict == "fails":
                with pytest.raises((KeyError, NotImplementedError, ValueError)):
                    _pyro_elbo(name, 1).loss_and_grads(model, g, x, num_data=40)
                continue
            _pyro_elbo(name, 1).loss_and_grads(model, g, x, num_data=40)  # trains
            value, se = estimate(name)
            noise = 5 * math.hypot(se, ref_se) + 1e-3
            if verdict == "exact":
                assert abs(value - ref) < noise, name
            elif verdict == "looser":
                assert value < ref - noise, name
            else:  # the batch's importance-weighted bound: at least the ELBO
                assert value > ref - noise, name


def test_mixvae_list_elbos_and_the_readme_show_the_table(capsys):
    from pathlib import Path

    from mixvae.cli import main
    from mixvae.inference.elbos import elbo_table_markdown

    assert main(["list", "--elbos"]) == 0
    out = capsys.readouterr().out
    assert "gmm x gaussian" in out and "TraceGraph_ELBO" in out and "KeyError: 'y'" in out
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert elbo_table_markdown() in readme


def test_train_takes_a_data_set_name_as_a_keyword(tmp_path):
    """mixvae.train(dataset="digits") (an AttributeError in 0.1): a name is the config's dataset."""
    from mixvae import train

    run = train(
        dataset="digits", prior="standard", guide="gaussian", hidden=(8,), latent_dim=2, epochs=1,
        out=str(tmp_path), progress=False, figures=False,
    )  # fmt: skip
    assert run.config.dataset == "digits" and run.summary is not None
