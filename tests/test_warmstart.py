"""The full-covariance mixture prior and warm starts (--init-from): VaDE-style pretraining."""

from __future__ import annotations

import pytest
import torch

from mixvae import TrainConfig, build, load_run, train
from mixvae.errors import ConfigError
from mixvae.inference.warmstart import fit_prior_to_codes, warm_start
from mixvae.models import FullCovGMMPrior, GMMPrior, StandardPrior

MEANS = torch.tensor([[-4.0, 0.0], [0.0, 4.0], [4.0, -1.0]])
# correlated, not axis-aligned: what a diagonal mixture cannot represent
TRILS = torch.tensor([[[0.5, 0.0], [0.4, 0.3]], [[0.8, 0.0], [-0.5, 0.2]], [[0.3, 0.0], [0.0, 0.6]]])


def _mixture_sample(n: int = 1500) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    labels = torch.arange(3).repeat_interleave(n // 3)
    z = MEANS[labels] + (TRILS[labels] @ torch.randn(n, 2, 1)).squeeze(-1)
    return z, labels


def test_full_covariance_prior_recovers_a_known_mixture_from_codes():
    z, _ = _mixture_sample()
    prior = FullCovGMMPrior(2, 3)
    fit_prior_to_codes(prior, z)
    order = prior.locs[:, 0].argsort()
    assert torch.allclose(prior.locs[order], MEANS, atol=0.1)
    assert torch.allclose(prior.logits.softmax(-1), torch.full((3,), 1 / 3), atol=0.02)
    cov = prior.scale_tril @ prior.scale_tril.transpose(-1, -2)
    assert torch.allclose(cov[order], TRILS @ TRILS.transpose(-1, -2), atol=0.06)
    # the prior's own density is the maximum-likelihood mixture: at least as
    # likely as the true one on these codes, and not by much (no overfitting)
    true = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.ones(3)),
        torch.distributions.MultivariateNormal(MEANS, scale_tril=TRILS),
    )
    with torch.no_grad():
        gain = float(prior.marginal().log_prob(z).mean() - true.log_prob(z).mean())
    assert 0 <= gain < 0.02


def test_code_variances_are_added_to_each_component():
    z, labels = _mixture_sample()
    variances = torch.stack([torch.full((2,), 0.1 * (k + 1)) for k in labels.tolist()])
    for prior in (FullCovGMMPrior(2, 3), GMMPrior(2, 3)):
        fit_prior_to_codes(prior, z)
        before = torch.stack([prior.component_distribution(k).variance for k in range(3)])
        fit_prior_to_codes(prior, z, code_variances=variances)
        after = torch.stack([prior.component_distribution(k).variance for k in range(3)])
        # the clusters are well separated: component k gains cluster k's variance
        order = prior.locs[:, 0].argsort()
        added = (after - before)[order]
        assert torch.allclose(added, torch.tensor([[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]]), atol=1e-3)


def test_only_mixture_priors_can_be_fitted_to_codes():
    with pytest.raises(ConfigError, match="gmm or gmm-full"):
        fit_prior_to_codes(StandardPrior(2), torch.randn(10, 2))
    with pytest.raises(ConfigError, match="latent dim"):
        fit_prior_to_codes(GMMPrior(3, 2), torch.randn(10, 2))


def _pretrained(small_digits, tmp_path, **kw):
    cfg = dict(prior="standard", guide="gaussian", hidden=(32,), latent_dim=3, epochs=2)
    return train(
        TrainConfig(**{**cfg, **kw}, out=str(tmp_path / "pre")),
        dataset=small_digits,
        progress=False,
        figures=False,
    )


def test_warm_start_copies_the_networks_and_fits_the_prior(small_digits, tmp_path):
    pre = _pretrained(small_digits, tmp_path)
    config = TrainConfig(prior="gmm-full", guide="gaussian", hidden=(32,), latent_dim=3, components=4)
    model, guide = build(config, small_digits.data_dim)
    warm_start(model, guide, tmp_path / "pre", small_digits.train_x, seed=0)
    for a, b in zip(guide.state_dict().values(), pre.guide.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(
        model.decoder.state_dict().values(), pre.model.decoder.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    with torch.no_grad():
        codes = pre.guide.q_z(small_digits.train_x)
    # component means lie among the codes, and the weighted mean of the
    # component means is the codes' mean (an EM fixed point)
    w = model.prior.logits.softmax(-1)
    assert torch.allclose((w[:, None] * model.prior.locs).sum(0), codes.mean.mean(0), atol=1e-3)


def test_warm_start_clusters_far_better_than_a_cold_start_on_digits(digits, tmp_path):
    common = dict(guide="gaussian", network="mlp", hidden=(64,), latent_dim=4)
    train(
        TrainConfig(prior="standard", epochs=30, out=str(tmp_path / "pre"), **common),
        dataset=digits,
        progress=False,
        figures=False,
    )
    acc = {}
    for init in (None, str(tmp_path / "pre")):
        run = train(
            TrainConfig(
                prior="gmm-full", epochs=3, init_from=init, out=str(tmp_path / f"{init is None}"), **common
            ),
            dataset=digits,
            progress=False,
            figures=False,
        )
        acc[init is not None] = run.summary["clustering"]["acc_hungarian"]
    # measured: 0.62 warm vs 0.14 cold (the cold prior has not separated anything in 3 epochs)
    assert acc[True] > acc[False] + 0.25
    assert acc[True] > 0.5


@pytest.mark.parametrize(
    ("change", "match"),
    [({"hidden": (16,)}, "does not match"), ({"latent_dim": 2}, "does not match")],
)
def test_init_from_a_run_of_another_architecture_is_refused(small_digits, tmp_path, change, match):
    _pretrained(small_digits, tmp_path)
    config = TrainConfig(
        **{"prior": "gmm-full", "guide": "gaussian", "hidden": (32,), "latent_dim": 3, **change},
        epochs=1,
        init_from=str(tmp_path / "pre"),
        out=str(tmp_path / "warm"),
    )
    with pytest.raises(ConfigError, match=match):
        train(config, dataset=small_digits, progress=False, figures=False)
    assert not (tmp_path / "warm").exists()  # refused before the folder is made
    # nor is a run that --overwrite would replace touched
    (tmp_path / "warm").mkdir()
    train(
        TrainConfig(prior="standard", guide="gaussian", hidden=(8,), epochs=1, out=str(tmp_path / "warm")),
        dataset=small_digits,
        progress=False,
        figures=False,
    )
    before = {p.name: p.read_bytes() for p in (tmp_path / "warm").iterdir() if p.is_file()}
    config.overwrite = True
    with pytest.raises(ConfigError, match=match):
        train(config, dataset=small_digits, progress=False, figures=False)
    assert {p.name: p.read_bytes() for p in (tmp_path / "warm").iterdir() if p.is_file()} == before


def test_init_from_a_folder_without_checkpoint_is_refused(small_digits, tmp_path):
    config = TrainConfig(
        prior="gmm", guide="gaussian", epochs=1, init_from=str(tmp_path), out=str(tmp_path / "w")
    )
    with pytest.raises(ConfigError, match=r"no checkpoint\.pt"):
        train(config, dataset=small_digits, progress=False, figures=False)
    assert not (tmp_path / "w").exists()


def test_init_from_records_its_source_and_refuses_other_data(small_digits, tmp_path):
    import hashlib
    import json

    _pretrained(small_digits, tmp_path)
    common = dict(prior="gmm", guide="gaussian", hidden=(32,), latent_dim=3, components=3, epochs=1)
    train(
        TrainConfig(**common, init_from=str(tmp_path / "pre"), out=str(tmp_path / "warm")),
        dataset=small_digits,
        progress=False,
        figures=False,
    )
    origin = json.loads((tmp_path / "warm" / "init_from.json").read_text())
    digest = hashlib.sha256((tmp_path / "pre" / "checkpoint.pt").read_bytes()).hexdigest()
    assert origin == {"run": str((tmp_path / "pre").resolve()), "checkpoint_sha256": digest}
    with pytest.raises(ConfigError, match="binarize 'none', this one 'dynamic'"):
        train(
            TrainConfig(
                **common, binarize="dynamic", init_from=str(tmp_path / "pre"), out=str(tmp_path / "w2")
            ),
            dataset=small_digits,
            progress=False,
            figures=False,
        )


def test_too_few_or_non_finite_codes_are_refused():
    with pytest.raises(ConfigError, match="use more data"):
        fit_prior_to_codes(GMMPrior(2, 5), torch.randn(3, 2))
    codes = torch.randn(20, 2)
    codes[4, 1] = float("nan")
    with pytest.raises(ConfigError, match="non-finite"):
        fit_prior_to_codes(GMMPrior(2, 2), codes)


def test_uniform_mixture_weights_stay_fixed_through_warm_start_and_training(small_digits, tmp_path):
    """--mixture-weights uniform: pi is 1/K, not a parameter; the warm start copies only means and covariances."""
    _pretrained(small_digits, tmp_path)
    fitted = {}
    common = dict(prior="gmm-full", guide="gaussian", hidden=(32,), latent_dim=3, components=4)
    for weights in ("learned", "uniform"):
        model, guide = build(TrainConfig(**common, mixture_weights=weights), small_digits.data_dim)
        warm_start(model, guide, tmp_path / "pre", small_digits.train_x, seed=0)
        fitted[weights] = model.prior
    learned, uniform = fitted["learned"], fitted["uniform"]
    assert not torch.allclose(learned.logits.softmax(-1), torch.full((4,), 0.25), atol=1e-3)
    assert torch.equal(uniform.logits, torch.zeros(4))
    assert torch.equal(uniform.locs, learned.locs) and torch.equal(uniform.scale_tril, learned.scale_tril)
    assert "logits_unconstrained" not in dict(uniform.named_parameters())
    run = train(
        TrainConfig(
            **common,
            epochs=2,
            mixture_weights="uniform",
            init_from=str(tmp_path / "pre"),
            out=str(tmp_path / "u"),
        ),
        dataset=small_digits,
        progress=False,
        figures=False,
    )
    assert torch.equal(run.model.prior.logits, torch.zeros(4))
    assert not torch.equal(run.model.prior.locs, uniform.locs)  # the rest of the prior did train
    assert torch.equal(load_run(tmp_path / "u").model.prior.logits, torch.zeros(4))


@pytest.mark.parametrize("prior", ["standard", "vampprior", "dilokthanakul"])
def test_uniform_mixture_weights_need_a_prior_that_learns_them(prior):
    guide = "dilokthanakul" if prior == "dilokthanakul" else "gaussian"
    config = TrainConfig(prior=prior, guide=guide, hidden=(8,), mixture_weights="uniform")
    with pytest.raises(
        ConfigError, match=r"--mixture-weights uniform applies to .*gmm, gmm-full.*drop the flag"
    ):
        build(config, 16)


def test_init_fits_keeps_the_fit_with_the_best_training_elbo(small_digits, tmp_path):
    """--init-fits R: R fits of the prior (GMM seeds SEED..SEED+R-1), the model's training ELBO
    chooses; the chosen start is the one fit with that seed gives, and R = 1 is the plain warm start."""
    import json

    from mixvae.data import evaluation_data
    from mixvae.inference.objectives import evaluate_elbo

    _pretrained(small_digits, tmp_path)
    common = dict(prior="gmm-full", guide="gaussian", hidden=(32,), latent_dim=3, components=4)
    x = evaluation_data(small_digits.train_x, "none")
    config = TrainConfig(
        **common, mixture_weights="uniform", init_from=str(tmp_path / "pre"), init_fits=4, seed=3
    )
    model, guide = build(config, small_digits.data_dim)
    origin = warm_start(model, guide, tmp_path / "pre", x, config=config, seed=3)
    fits = origin["fits"]
    assert [f["gmm_seed"] for f in fits] == [3, 4, 5, 6] and sum(f["chosen"] for f in fits) == 1
    chosen = max(fits, key=lambda f: f["training_elbo"])
    assert chosen["chosen"]
    assert len({round(f["training_elbo"], 6) for f in fits}) > 1  # the fits differ
    assert evaluate_elbo(model, guide, x, seed=3) == pytest.approx(chosen["training_elbo"])
    # the same start as one fit with the chosen seed
    one = TrainConfig(**common, mixture_weights="uniform", init_from=str(tmp_path / "pre"))
    single, single_guide = build(one, small_digits.data_dim)
    plain = warm_start(single, single_guide, tmp_path / "pre", x, config=one, seed=chosen["gmm_seed"])
    assert "fits" not in plain
    for a, b in zip(model.prior.state_dict().values(), single.prior.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # through train(): recorded in init_from.json
    run = train(
        TrainConfig(**{**config.settings(), "epochs": 1, "out": str(tmp_path / "w")}),
        dataset=small_digits,
        progress=False,
        figures=False,
    )
    recorded = json.loads((tmp_path / "w" / "init_from.json").read_text())["fits"]
    assert [f["gmm_seed"] for f in recorded] == [3, 4, 5, 6] and run.config.init_fits == 4


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"init_fits": 0}, "--init-fits must be >= 1"),
        ({"init_fits": 2}, "give --init-from RUN"),
        (
            {"init_fits": 2, "prior": "standard", "init_from": "pre"},
            "prior 'standard' has no Gaussian-mixture",
        ),
    ],
)
def test_init_fits_refusals_are_one_line_before_any_file(small_digits, tmp_path, settings, match):
    settings = {"prior": "gmm-full", "guide": "gaussian", "hidden": (8,), "epochs": 1, **settings}
    if "init_from" in settings:
        settings["init_from"] = str(tmp_path / settings["init_from"])
    with pytest.raises(ConfigError, match=match):
        train(TrainConfig(**settings, out=str(tmp_path / "run")), dataset=small_digits, progress=False)
    assert not (tmp_path / "run").exists()
