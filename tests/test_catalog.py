"""The priors and guides beyond the core: VampPrior, Dilokthanakul GMVAE, post-hoc GMM."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from mixvae import TrainConfig, build
from mixvae.errors import ConfigError


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


def test_diag_normal_mixture_matches_torch_mixture_in_value_and_gradient():
    import pyro.distributions as dist

    from mixvae.distributions import DiagNormalMixture

    torch.manual_seed(0)
    k, d = 30, 40
    locs = (3 * torch.randn(k, d)).requires_grad_()
    # scales down to 0.005: the expanded quadratic reaches 1e6 before cancelling
    scales = torch.empty(k, d).uniform_(0.005, 2.0).requires_grad_()
    logits = torch.randn(k).requires_grad_()
    z = torch.cat([locs[:4].detach() + 0.01 * torch.randn(4, d), 3 * torch.randn(6, d)]).view(2, 5, d)
    fast = DiagNormalMixture(logits.log_softmax(-1), locs, scales).log_prob(z)
    ref = dist.MixtureSameFamily(dist.Categorical(logits=logits), dist.Normal(locs, scales).to_event(1))
    slow = ref.log_prob(z)
    assert fast.shape == (2, 5)
    assert torch.allclose(fast, slow, rtol=1e-5, atol=1e-3)
    g_fast = torch.autograd.grad(fast.sum(), (locs, scales, logits))
    g_slow = torch.autograd.grad(slow.sum(), (locs, scales, logits))
    for a, b in zip(g_fast, g_slow, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * b.abs().max())


def test_diag_normal_mixture_normalises_weights_and_checks_shapes():
    from mixvae.distributions import DiagNormalMixture

    torch.manual_seed(1)
    locs, scales, logits = torch.randn(4, 3), torch.rand(4, 3) + 0.2, torch.randn(4)
    z = torch.randn(6, 3)
    a = DiagNormalMixture(logits, locs, scales)
    b = DiagNormalMixture(logits.log_softmax(-1), locs, scales)
    assert torch.allclose(a.log_prob(z), b.log_prob(z), atol=1e-6)
    draws = a.sample((200_000,))
    assert torch.allclose(draws.mean(0), a.mean, atol=0.02)
    assert torch.allclose(draws.var(0), a.variance, rtol=0.02)
    with pytest.raises(ValueError, match="locs"):
        DiagNormalMixture(logits, locs.expand(2, 4, 3), scales)
    with pytest.raises(ValueError, match="cannot score"):
        a.log_prob(torch.randn(6, 2))


def test_vampprior_data_init_copies_distinct_training_images():
    config = TrainConfig(
        prior="vampprior", guide="gaussian", hidden=(8,), pseudo_inputs=5, pseudo_init="data"
    )
    model, _ = build(config, 4)
    x = (
        torch.tensor([[0.0, 0.5, 1.0, 0.2]]) + torch.arange(12.0)[:, None] / 100
    )  # 12 distinct rows in [0, 1.11]
    x = x.clamp(max=1.0)
    model.prior.initialise_from_data(x, torch.Generator().manual_seed(3))
    u = model.prior.pseudo_inputs().detach()
    expect = x.clamp(0.01, 0.99)
    matches = torch.cdist(u, expect).argmin(1)
    assert torch.allclose(u, expect[matches], atol=1e-5)
    assert len(set(matches.tolist())) == 5  # distinct images
    again, _ = build(config, 4)
    again.prior.initialise_from_data(x, torch.Generator().manual_seed(3))
    assert torch.equal(again.prior.pseudo_raw, model.prior.pseudo_raw)  # the seed decides
    with pytest.raises(ConfigError, match="at least 5 training points"):
        again.prior.initialise_from_data(x[:4], torch.Generator())
    # the default start ignores the data
    plain, _ = build(dataclasses.replace(config, pseudo_init="random"), 4)
    before = plain.prior.pseudo_raw.detach().clone()
    plain.prior.initialise_from_data(x, torch.Generator())
    assert torch.equal(plain.prior.pseudo_raw, before)
    with pytest.raises(ConfigError, match="--pseudo-init"):
        TrainConfig(pseudo_init="kmeans").validate()


def test_vampprior_parameters_are_not_duplicated():
    model, guide = build(TrainConfig(prior="vampprior", guide="gaussian", hidden=(8,), pseudo_inputs=4), 64)
    model_ids = {id(p) for p in model.parameters()}
    assert model_ids.isdisjoint({id(p) for p in guide.parameters()})
    assert id(model.prior.pseudo_raw) in model_ids
    assert not any(k.startswith("prior._encoder") for k in model.state_dict())


@pytest.mark.parametrize("threshold,beta", [(None, 1.0), (None, 0.4), (0.5, 1.0), (50.0, 0.4)])
def test_dilokthanakul_elbo_is_the_explicit_sum_over_c(threshold, beta, small_digits):
    """On fixed weights, Pyro's enumerated objective equals the hand-written sum over c."""
    from pyro import poutine
    from torch.distributions import Normal

    from mixvae.inference import LatentScale, make_elbo

    k, d = 4, 3
    config = TrainConfig(
        prior="dilokthanakul",
        guide="dilokthanakul",
        latent_dim=d,
        w_dim=2,
        components=k,
        hidden=(16,),
        zprior_threshold=threshold,
    )
    model, guide = build(config, 64)
    x = small_digits.train_x[:5]
    trace = poutine.trace(guide).get_trace(x)
    w, z = trace.nodes["w"]["value"], trace.nodes["z"]["value"]
    scale = LatentScale(beta)
    pyro_elbo = -make_elbo().differentiable_loss(scale(model), scale(poutine.replay(guide, trace=trace)), x)
    # by hand
    prior = model.prior
    out = prior.net(w).unflatten(-1, (k, 2, d))
    locs, scales = out[..., 0, :], torch.nn.functional.softplus(out[..., 1, :]) + 1e-4
    per_c = math.log(1 / k) + Normal(locs, scales).log_prob(z.unsqueeze(-2)).sum(-1)  # (B, K)
    log_pz_given_w = torch.logsumexp(per_c, -1)
    log_pw = Normal(0.0, 1.0).log_prob(w).sum(-1)
    q = guide.q_latents(x)
    log_q = q["w"].log_prob(w) + q["z"].log_prob(z)
    log_px = model.decoder(z).log_prob(x)
    kl_terms = log_pw + log_pz_given_w - log_q
    if threshold is not None:
        r = per_c.log_softmax(-1)
        kl_c = (r.exp() * (r - math.log(1 / k))).sum(-1)
        kl_terms = kl_terms + (kl_c - threshold).clamp(max=0)
    by_hand = (log_px + beta * kl_terms).sum()
    assert float(pyro_elbo.detach()) == pytest.approx(float(by_hand.detach()), rel=1e-5)
    # and the gradients agree, the clamp's included
    params = list(prior.parameters())
    g_pyro = torch.autograd.grad(pyro_elbo, params, retain_graph=True)
    g_hand = torch.autograd.grad(by_hand, params)
    for a, b in zip(g_pyro, g_hand, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_zprior_clamp_removes_the_kl_gradient_below_threshold(small_digits):
    """Below lambda the z-prior KL stops pulling p(c | w, z) towards uniform."""
    from pyro import poutine

    from mixvae.inference import make_elbo

    grads = {}
    for threshold in (None, 1e6):
        torch.manual_seed(0)
        config = TrainConfig(
            prior="dilokthanakul",
            guide="dilokthanakul",
            latent_dim=3,
            w_dim=2,
            components=4,
            hidden=(16,),
            zprior_threshold=threshold,
        )
        model, guide = build(config, 64)
        x = small_digits.train_x[:5]
        trace = poutine.trace(guide).get_trace(x)
        loss = make_elbo().differentiable_loss(model, poutine.replay(guide, trace=trace), x)
        grads[threshold] = torch.autograd.grad(loss, list(model.prior.parameters()))
    assert any(not torch.allclose(a, b) for a, b in zip(grads[None], grads[1e6], strict=True))


def test_dilokthanakul_clusters_and_samples(small_digits):
    from mixvae.evaluation import component_posterior

    model, guide = build(
        TrainConfig(prior="dilokthanakul", guide="dilokthanakul", latent_dim=3, components=4, hidden=(16,)),
        64,
    )
    probs = component_posterior(model, guide, small_digits.test_x[:9], num_samples=4)
    assert probs.shape == (9, 4) and torch.allclose(probs.sum(-1), torch.ones(9))
    assert model.sample(6, component=2).shape == (6, 64)
    assert model.prior.sample_z(6).shape == (6, 3)


class _IdentityEncoder(torch.nn.Module):
    """A stand-in guide whose q(z|x) is a tight Gaussian at x itself."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def q_z(self, x):
        import pyro.distributions as dist

        return dist.Normal(x, 1e-3).to_event(1)

    def q_mean(self, x):
        return x


@pytest.mark.parametrize("bic", [False, True])
def test_posthoc_gmm_recovers_a_known_mixture(bic):
    from mixvae.evaluation.posthoc import fit_posthoc_gmm

    torch.manual_seed(0)
    means = torch.tensor([[-4.0, 0.0], [0.0, 4.0], [4.0, -1.0]])
    z = torch.cat([m + 0.5 * torch.randn(400, 2) for m in means])
    gmm = fit_posthoc_gmm(_IdentityEncoder(), z, 6 if bic else 3, select_by_bic=bic)
    assert gmm.num_components == 3
    order = gmm.means[:, 0].argsort()
    assert torch.allclose(gmm.means[order], means, atol=0.1)
    assert torch.allclose(gmm.weights, torch.full((3,), 1 / 3), atol=0.02)
    assert torch.allclose(gmm.covariances[order], 0.25 * torch.eye(2).expand(3, 2, 2), atol=0.05)


def test_posthoc_gmm_run_saves_and_reloads_it(small_digits, tmp_path):
    from mixvae import load_run, train
    from mixvae.evaluation.sampling import sample_latents
    from mixvae.runs.folder import load_posthoc_gmm

    run = train(
        TrainConfig(
            prior="posthoc-gmm",
            guide="gaussian",
            hidden=(32,),
            latent_dim=3,
            epochs=2,
            posthoc_components=4,
            out=str(tmp_path),
        ),
        dataset=small_digits,
        progress=False,
        figures=False,
    )
    gmm = load_posthoc_gmm(tmp_path)
    assert gmm is not None and gmm.num_components == 4 and gmm.means.shape == (4, 3)
    loaded = load_run(tmp_path)
    torch.manual_seed(3)
    a = sample_latents(loaded, 5, "posthoc-gmm", data=small_digits)
    torch.manual_seed(3)
    b = gmm.sample(5)
    assert torch.equal(a, b)  # the saved GMM is used, not a refit
    assert run.model.prior.sample_z(7).shape == (7, 3)


def test_sample_command_for_every_source(tmp_path, capsys):
    from matplotlib.image import imread

    from mixvae.cli import main

    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--network",
                "mlp",
                "--hidden",
                "32",
                "--epochs",
                "1",
                "--components",
                "3",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    capsys.readouterr()
    sizes = {}
    for source in ("prior", "aggregate", "posthoc-gmm"):
        for component in (None, "1", "all"):
            extra = [] if component is None else ["--component", component]
            assert main(["sample", str(out), "--source", source, "--n", "9", *extra]) == 0, (
                source,
                component,
            )
            png = capsys.readouterr().out.strip()
            image = imread(png)
            assert image.ndim == 3 and image.std() > 0.01  # not blank
            sizes[(source, component)] = image.shape
    assert (out / "posthoc_gmm.pt").is_file()  # fitted on first use and saved
    assert sizes[("prior", "all")][0] > sizes[("prior", None)][0] * 0.9
    assert main(["sample", str(out), "--component", "7"]) == 2
    assert "--component must lie in 0..2" in capsys.readouterr().err
    assert main(["sample", str(tmp_path / "nothing")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("guide", ["categorical", "gaussian"])
def test_labelled_points_observe_y_instead_of_enumerating_it(guide, small_digits):
    from mixvae.inference import make_elbo
    from tests.test_matrix import ShapeRecorder

    model, guide_obj = build(
        TrainConfig(prior="gmm", guide=guide, latent_dim=3, components=10, hidden=(16,)), 64
    )
    x, y = small_digits.train_x[:6], small_digits.train_y[:6]
    mrec, grec = ShapeRecorder(), ShapeRecorder()
    loss = make_elbo(enumerates=False).differentiable_loss(mrec(model), grec(guide_obj), x, 100, y)
    assert torch.isfinite(loss)
    assert mrec.shapes["y"] == ((6,), (6,))  # observed: one value per datapoint, no enumeration dim
    assert "y" not in grec.shapes
    assert grec.shapes["z"] == ((6, 3), (6,))


def test_semi_supervised_beats_unsupervised_on_digits(digits, tmp_path):
    """10 labels per class lift held-out accuracy above the same model's unsupervised clustering."""
    from mixvae import train

    common = dict(prior="gmm", guide="categorical", hidden=(128,), epochs=12, components=10)
    unsup = train(
        TrainConfig(**common, out=str(tmp_path / "u")), dataset=digits, progress=False, figures=False
    )
    semi = train(
        TrainConfig(**common, labels_per_class=10, out=str(tmp_path / "s")),
        dataset=digits,
        progress=False,
        figures=False,
    )
    assert semi.summary["labels_used"] == 100
    acc = semi.summary["classification_accuracy"]
    assert acc > unsup.summary["clustering"]["acc_hungarian"] + 0.1
    assert acc > 0.75


def test_labels_need_a_matching_discrete_component(digits, tmp_path):
    from mixvae import train
    from mixvae.errors import ConfigError

    with pytest.raises(ConfigError, match="use --components 10"):
        train(TrainConfig(components=4, labels_per_class=5, hidden=(8,), out=str(tmp_path)), dataset=digits)
    with pytest.raises(ConfigError, match="prior 'standard' has none"):
        train(
            TrainConfig(
                prior="standard", guide="gaussian", labels_per_class=5, hidden=(8,), out=str(tmp_path / "b")
            ),
            dataset=digits,
        )


def test_training_with_pseudo_init_data_starts_from_training_images(tmp_path, small_digits):
    from mixvae import train

    run = train(
        TrainConfig(prior="vampprior", guide="gaussian", hidden=(8,), latent_dim=2, pseudo_inputs=6),
        pseudo_init="data",
        epochs=1,
        lr=1e-9,  # the start, not the training, is under test
        out=str(tmp_path),
        dataset=small_digits,
        progress=False,
        figures=False,
    )
    u = run.model.prior.pseudo_inputs().detach()
    nearest = torch.cdist(u, small_digits.train_x.clamp(0.01, 0.99)).min(1).values
    assert nearest.max() < 1e-3
