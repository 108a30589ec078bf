"""Every prior with every guide: trains, its loss falls, enumeration shapes are right."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pyro
import pytest
import torch
from pyro.poutine.messenger import Messenger

from mixvae import GUIDES, PRIORS, TrainConfig, build, train
from mixvae.build import compatible_priors
from mixvae.errors import IncompatiblePairError
from mixvae.inference import make_elbo
from mixvae.inference.direct import direct_loss, direct_problem
from mixvae.inference.objectives import LatentScale, has_discrete_site
from mixvae.networks import NETWORKS

PAIRS = list(itertools.product(PRIORS.names(), GUIDES.names()))
VALID = [(p, g) for p, g in PAIRS if p in compatible_priors(g)]
INVALID = [(p, g) for p, g in PAIRS if p not in compatible_priors(g)]


def test_matrix_is_what_we_think():
    assert ("standard", "categorical") in INVALID
    assert {("standard", "gaussian"), ("gmm", "mixture"), ("gmm", "categorical")} <= set(VALID)


@pytest.mark.parametrize("prior,guide", VALID)
def test_every_pair_trains_and_improves(prior, guide, small_digits, tmp_path):
    run = train(
        TrainConfig(
            prior=prior,
            guide=guide,
            latent_dim=4,
            components=5,
            guide_components=3,
            hidden=(64,),
            epochs=6,
            batch_size=50,
            lr=3e-3,
            out=str(tmp_path),
        ),
        dataset=small_digits,
        progress=False,
        figures=False,
    )
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 6
    metrics = [json.loads(line) for line in lines]
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"] - 2.0
    assert metrics[-1]["heldout_elbo"] > metrics[0]["heldout_elbo"] + 2.0
    assert run.summary["heldout_elbo"] == pytest.approx(metrics[-1]["heldout_elbo"])


@pytest.mark.parametrize("prior,guide", VALID)
def test_every_pair_trains_and_improves_with_the_conv_network(prior, guide, small_digit_images, tmp_path):
    run = train(
        TrainConfig(
            prior=prior,
            guide=guide,
            network="conv",
            conv_channels=(8, 16),
            conv_features=32,
            latent_dim=4,
            components=5,
            guide_components=3,
            pseudo_inputs=50,
            epochs=6,
            batch_size=50,
            lr=3e-3,
            out=str(tmp_path),
        ),
        dataset=small_digit_images,
        progress=False,
        figures=False,
    )
    assert run.config.network == "conv"
    if prior == "vampprior":
        assert run.model.prior.pseudo_inputs().shape == (50, 1, 8, 8)
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"] - 2.0
    assert metrics[-1]["heldout_elbo"] > metrics[0]["heldout_elbo"] + 2.0


@pytest.mark.parametrize("prior,guide", INVALID)
def test_incompatible_pairs_are_refused(prior, guide, small_digits, tmp_path):
    config = TrainConfig(prior=prior, guide=guide, hidden=(8,), out=str(tmp_path))
    discrete_only_in_guide = GUIDES[guide].discrete_site not in (None, *PRIORS[prior].latent_sites)
    with pytest.raises(IncompatiblePairError, match="inflate" if discrete_only_in_guide else "does not"):
        train(config, dataset=small_digits, progress=False)
    # The object-level check refuses the same pair when built by hand.
    from mixvae.build import check_pair
    from mixvae.guides import GUIDES as G
    from mixvae.models import PRIORS as P
    from mixvae.models import VAE, BernoulliDecoder

    guide_obj = G[guide].from_config(config, (64,), NETWORKS["mlp"].encoder(config, (64,)))
    model = VAE(P[prior].from_config(config, (64,), guide_obj), BernoulliDecoder(config.latent_dim, 64, (8,)))
    with pytest.raises(IncompatiblePairError):
        check_pair(model, guide_obj)


def test_component_count_mismatch_is_refused():
    from mixvae.build import check_pair
    from mixvae.guides import CategoricalGuide
    from mixvae.models import VAE, BernoulliDecoder, GMMPrior

    model = VAE(GMMPrior(3, 5), BernoulliDecoder(3, 8, (4,)))
    with pytest.raises(IncompatiblePairError, match="same --components"):
        check_pair(model, CategoricalGuide(8, 3, 4, (4,)))


class ShapeRecorder(Messenger):
    """Records every sample site's value shape and distribution batch shape."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def _postprocess_message(self, msg: dict[str, Any]) -> None:
        if msg["type"] == "sample" and hasattr(msg["fn"], "batch_shape"):  # not the plate
            self.shapes[msg["name"]] = (tuple(msg["value"].shape), tuple(msg["fn"].batch_shape))


def _expected(model, guide, b: int, d: int, k: int, particles: int | None):
    """Shapes (value, batch) per site in model and guide under TraceEnum_ELBO, from the declarations.

    Every continuous site is a D-vector here; an enumerated site takes K values in
    a new leftmost dimension, and the sites declared after it depend on it.
    """
    p = () if particles is None else (particles,)
    pb = (*p, b)
    lead = (1,) * (len(p) + 1)  # one plate dim (+ the particle dim) to the right
    guide_: dict[str, Any] = {}
    after = False
    for site in guide.sites:
        if site.enumerated:
            guide_[site.name], after = ((k, *lead), pb), True
        else:
            guide_[site.name] = ((k, *pb, d), (k, *pb)) if after else ((*pb, d), pb)
    model_: dict[str, Any] = {}
    after = False
    for site in model.prior.sites:
        value = guide_[site.name][0] if site.name in guide_ else (k, *lead)  # else: enumerated in the model
        if site.enumerated:
            model_[site.name], after = (value, pb), True
        else:
            model_[site.name] = (value, (k, *pb) if after else pb)
    model_["x"] = ((b, 64), (k, *pb) if guide.discrete_site is not None else pb)
    return model_, guide_


@pytest.mark.parametrize("particles", [None, 3])
@pytest.mark.parametrize("prior,guide", VALID)
def test_enumeration_shapes(prior, guide, particles, small_digits):
    b, d, k = 7, 4, 5
    config = TrainConfig(
        prior=prior, guide=guide, latent_dim=d, components=k, guide_components=3, hidden=(16,)
    )
    model, guide_obj = build(config, 64)
    mrec, grec = ShapeRecorder(), ShapeRecorder()
    elbo = make_elbo(
        particles or 1,
        vectorize_particles=particles is not None,
        enumerates=has_discrete_site(model, guide_obj),
    )
    loss = elbo.differentiable_loss(mrec(model), grec(guide_obj), small_digits.train_x[:b], 100)
    assert torch.isfinite(loss)
    want_model, want_guide = _expected(model, guide_obj, b, d, k, particles)
    assert mrec.shapes == want_model
    assert grec.shapes == want_guide


def test_latent_dim_one_with_mixture_guide(small_digits, tmp_path):
    """MixtureOfDiagNormals refuses D = 1; the mixture guide handles it with its own distribution."""
    run = train(
        TrainConfig(
            prior="gmm",
            guide="mixture",
            latent_dim=1,
            components=3,
            hidden=(32,),
            epochs=4,
            batch_size=50,
            lr=3e-3,
            out=str(tmp_path),
        ),
        dataset=small_digits,
        progress=False,
        figures=False,
    )
    assert torch.isfinite(torch.tensor(run.summary["heldout_elbo"]))
    assert run.guide.q_z(small_digits.test_x[:5]).event_shape == (1,)


def test_two_models_in_one_process_do_not_share_parameters(small_digits):
    """Pyro's parameter store is keyed by name; each mixvae module gets its own prefix."""
    config = TrainConfig(prior="gmm", guide="gaussian", hidden=(8,), latent_dim=2, components=2)
    (m1, g1), (m2, g2) = build(config, 64), build(config, 64)
    x = small_digits.train_x[:4]
    elbo = make_elbo()
    for m, g in ((m1, g1), (m2, g2)):
        elbo.loss(m, g, x)
    assert not torch.equal(m1.prior.locs, m2.prior.locs)
    names = list(pyro.get_param_store().keys())
    assert len(names) == len(set(names))
    assert len(names) == sum(
        1 for _ in [*m1.parameters(), *g1.parameters(), *m2.parameters(), *g2.parameters()]
    )


# ----------------------------------------------------------------------------- the direct objective
# dilokthanakul's prior adds the free-bits factor to its program: Pyro's ELBO trains it
DIRECT = [(p, g) for p, g in VALID if p != "dilokthanakul"]


def test_direct_objective_covers_the_builtin_pairs():
    assert {("standard", "gaussian"), ("gmm", "gaussian"), ("gmm", "categorical"), ("gmm", "mixture")} <= set(
        DIRECT
    )
    for prior, guide in VALID:
        config = TrainConfig(
            prior=prior, guide=guide, hidden=(8,), latent_dim=3, components=4, pseudo_inputs=5
        )
        model, g = build(config, 16)
        assert (direct_problem(model, g) is None) == ((prior, guide) in DIRECT), (prior, guide)


@pytest.mark.parametrize("beta,analytic_kl", [(1.0, True), (0.3, True), (1.0, False)])
@pytest.mark.parametrize("prior,guide", DIRECT)
def test_direct_loss_is_pyros_elbo(prior, guide, beta, analytic_kl):
    """Same draws, same value, same gradients as make_elbo's ELBO under LatentScale(beta)."""
    _check_direct_loss(prior, guide, beta, analytic_kl)


@pytest.mark.parametrize("prior,guide", [(p, g) for p, g in DIRECT if p in ("gmm", "gmm-full")])
def test_direct_loss_is_pyros_elbo_with_uniform_mixture_weights(prior, guide):
    _check_direct_loss(prior, guide, 1.0, True, mixture_weights="uniform")


def _check_direct_loss(prior: str, guide: str, beta: float, analytic_kl: bool, **settings) -> None:
    config = TrainConfig(
        prior=prior,
        guide=guide,
        hidden=(8,),
        latent_dim=3,
        components=4,
        guide_components=3,
        pseudo_inputs=5,
        **settings,
    )
    torch.manual_seed(0)
    model, g = build(config, 20)
    x = torch.bernoulli(torch.rand(16, 20))
    params = [*model.parameters(), *g.parameters()]
    elbo = make_elbo(enumerates=has_discrete_site(model, g), analytic_kl=analytic_kl)
    torch.manual_seed(1)
    with pyro.get_param_store().scope():
        expected = elbo.differentiable_loss(LatentScale(beta)(model), LatentScale(beta)(g), x, 100)
    expected_grads = torch.autograd.grad(expected, params)
    torch.manual_seed(1)
    loss = direct_loss(model, g, x, 100, beta=beta, analytic_kl=analytic_kl)
    grads = torch.autograd.grad(loss, params)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    for a, b in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()) + 1e-7)


def test_subclassed_programs_fall_back_to_pyro():
    class Noisy(GUIDES["gaussian"]):
        def sample_latents(self, x, labels=None):
            return pyro.sample("z", self.q_z(x))

    class Rewritten(PRIORS["gmm"]):  # declares y then z | y, but its program draws z from the marginal
        def forward(self, component=None):
            return pyro.sample("z", self.marginal())

    class Shifted(GUIDES["categorical"]):  # rewrites the program
        def sample_latents(self, x, labels=None):
            return super().sample_latents(x + 1, labels)

    class Subclass(PRIORS["gmm"]):  # changes nothing: still exact
        pass

    model, guide = build(TrainConfig(prior="standard", guide="gaussian", hidden=(8,)), 16)
    assert direct_problem(model, guide) is None
    assert "sample_latents" in direct_problem(model, Noisy(16, 10, (8,)))
    model, guide = build(TrainConfig(prior="gmm", guide="categorical", hidden=(8,)), 16)
    assert direct_problem(model, guide) is None
    assert "sample_latents" in direct_problem(model, Shifted(16, 10, 10, (8,)))
    model.prior = Rewritten(10, 10)
    assert "forward" in direct_problem(model, guide)
    model.prior = Subclass(10, 10)
    assert direct_problem(model, guide) is None


@pytest.mark.parametrize("prior,guide", [("gmm", "categorical"), ("standard", "gaussian")])
def test_training_with_the_direct_objective_is_training_with_pyro(
    prior, guide, small_digits, tmp_path, monkeypatch
):
    """Two epochs (with KL warm-up) end at the same parameters either way, to float rounding."""
    import mixvae.inference.loss as loss_module

    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return direct_loss(*args, **kwargs)

    monkeypatch.setattr(loss_module, "direct_loss", counted)
    runs, steps = {}, {}
    for objective in ("auto", "pyro"):
        config = TrainConfig(
            prior=prior,
            guide=guide,
            latent_dim=3,
            components=4,
            hidden=(32,),
            epochs=2,
            batch_size=50,
            warmup_epochs=1.5,
            binarize="dynamic",
            objective=objective,
            out=str(tmp_path / objective),
        )
        runs[objective] = train(config, dataset=small_digits, progress=False, figures=False)
        steps[objective] = len(calls)
        calls.clear()
    assert steps == {"auto": 2 * 12, "pyro": 0}  # 600 training points in batches of 50
    ours, pyros = (dict(runs[o].guide.named_parameters()) for o in ("auto", "pyro"))
    for name, value in ours.items():
        torch.testing.assert_close(value, pyros[name], rtol=1e-3, atol=1e-4)


def test_the_readme_guide_table_says_what_the_registries_allow():
    import re

    from tests.conftest import ROOT

    text = (ROOT / "README.md").read_text()
    table = text[text.index("| guide | q | pairs with |") :].split("\n\n")[0]
    rows = re.findall(r"^\| `([a-z-]+)` \| .*\| ([a-z, -]+) \|$", table, flags=re.M)
    assert {name for name, _ in rows} == set(GUIDES.names())
    for name, pairs in rows:
        assert [p.strip() for p in pairs.split(",")] == compatible_priors(name), name


def test_direct_loss_is_pyros_elbo_with_a_separate_body_for_q_y():
    _check_direct_loss("gmm", "categorical", 1.0, True, y_network="separate")
