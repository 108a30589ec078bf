"""The training recipes' options for clustering from scratch (--mutual-info, --y-temperature,
--y-network separate), checked against closed forms."""

from __future__ import annotations

import json

import pyro
import pytest
import torch

from mixvae import TrainConfig, train
from mixvae.build import build
from mixvae.errors import ConfigError
from mixvae.inference.setup import start_run
from mixvae.inference.step import RunObjective, mean_entropy, minibatch_information, step_schedule


def _kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return (p * (p.log() - q.log())).sum(-1)


def test_minibatch_information_is_the_gap_between_the_pointwise_and_the_aggregate_kl():
    """I = mean_b KL(q_b || p) - KL(mean q || p) for any p(y), and its two extremes."""
    gen = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(50, 7, generator=gen, dtype=torch.float64)
    q = logits.softmax(-1)
    for p in (
        torch.full((7,), 1 / 7, dtype=torch.float64),
        torch.rand(7, generator=gen, dtype=torch.float64),
    ):
        p = p / p.sum()
        expected = _kl(q, p).mean() - _kl(q.mean(0), p)
        torch.testing.assert_close(minibatch_information(logits), expected)
    # every point sure of its own cluster, the clusters used equally: log K; all points alike: 0
    one_hot = torch.eye(7, dtype=torch.float64).repeat(3, 1) * 200.0
    torch.testing.assert_close(minibatch_information(one_hot), torch.tensor(7.0, dtype=torch.float64).log())
    alike = torch.randn(1, 7, generator=gen, dtype=torch.float64).expand(20, 7)
    torch.testing.assert_close(minibatch_information(alike), torch.tensor(0.0, dtype=torch.float64))


def test_the_step_subtracts_the_weighted_information_from_the_negative_elbo(small_digits, tmp_path):
    """The loss with --mutual-info lambda is the ELBO's minus lambda * beta * N * I of the minibatch."""
    config = TrainConfig(
        prior="gmm", guide="categorical", hidden=(32,), latent_dim=4, components=10, out=str(tmp_path / "r")
    )
    run, data, _ = start_run(config, small_digits, device=torch.device("cpu"), write=False, claim=False)
    plain = RunObjective(run, data, torch.device("cpu"))
    config.mutual_info = 0.5
    weighted = RunObjective(run, data, torch.device("cpu"))
    xb = data.train_x[:64]
    losses = []
    for objective in (plain, weighted):
        pyro.set_rng_seed(3)
        losses.append(objective(xb, 0.8, torch.Generator().manual_seed(1)))
    info = minibatch_information(run.guide.component_logits(xb))
    assert info > 0
    torch.testing.assert_close(losses[1], losses[0] - 0.5 * 0.8 * len(data.train_x) * info)


def test_the_y_temperature_weighs_each_points_entropy_and_falls_to_one(small_digits, tmp_path):
    """With T the loss is the ELBO's minus (T - 1) * beta * N * mean H(q(y|x)): H weighs beta * T;
    T falls linearly from --y-temperature to 1 over --y-temperature-epochs (then stays 1)."""
    config = TrainConfig(
        prior="gmm", guide="categorical", hidden=(32,), latent_dim=4, components=10, out=str(tmp_path / "r")
    )
    run, data, _ = start_run(config, small_digits, device=torch.device("cpu"), write=False, claim=False)
    objective = RunObjective(run, data, torch.device("cpu"))
    xb = data.train_x[:64]
    losses = []
    for temperature in (1.0, 2.5):
        pyro.set_rng_seed(3)
        losses.append(objective(xb, 0.5, torch.Generator().manual_seed(1), temperature))
    entropy = mean_entropy(run.guide.component_logits(xb))
    logits = run.guide.component_logits(xb)
    torch.testing.assert_close(entropy, torch.distributions.Categorical(logits=logits).entropy().mean())
    torch.testing.assert_close(losses[1], losses[0] - 1.5 * 0.5 * len(data.train_x) * entropy)
    annealed = TrainConfig(y_temperature=5.0, y_temperature_epochs=2.0, warmup_epochs=1.0)
    assert step_schedule(5, 10, annealed) == pytest.approx((0.5, 4.0))
    assert step_schedule(20, 10, annealed) == (1.0, 1.0)
    assert step_schedule(500, 10, annealed) == (1.0, 1.0)
    assert step_schedule(7, 10, TrainConfig()) == (1.0, 1.0)


def test_mutual_info_trains_and_is_refused_where_the_guide_has_no_discrete_site(small_digits, tmp_path):
    run = train(
        TrainConfig(
            prior="gmm",
            guide="categorical",
            hidden=(32,),
            latent_dim=4,
            components=10,
            mutual_info=1.0,
            epochs=2,
            out=str(tmp_path / "ok"),
        ),
        dataset=small_digits,
    )
    assert run.config.mutual_info == 1.0
    with pytest.raises(ConfigError, match="guide 'gaussian' has none"):
        train(
            TrainConfig(prior="gmm", guide="gaussian", mutual_info=1.0, out=str(tmp_path / "no")),
            dataset=small_digits,
        )
    assert not (tmp_path / "no").exists()
    with pytest.raises(ConfigError, match="--mutual-info must be >= 0"):
        TrainConfig(mutual_info=-1.0).validate()


def test_y_temperature_trains_records_its_schedule_and_refuses_what_it_cannot_do(small_digits, tmp_path):
    run = train(
        TrainConfig(
            prior="gmm",
            guide="categorical",
            hidden=(32,),
            latent_dim=4,
            components=10,
            y_temperature=3.0,
            y_temperature_epochs=2.0,
            epochs=3,
            out=str(tmp_path / "ok"),
        ),
        dataset=small_digits,
    )
    metrics = [json.loads(line) for line in (tmp_path / "ok" / "metrics.jsonl").read_text().splitlines()]
    assert [m["y_temperature"] for m in metrics] == pytest.approx([2.0, 1.0, 1.0])
    assert run.config.y_temperature == 3.0
    with pytest.raises(ConfigError, match="guide 'gaussian' has none"):
        train(
            TrainConfig(
                prior="gmm",
                guide="gaussian",
                y_temperature=2.0,
                y_temperature_epochs=1.0,
                out=str(tmp_path / "no"),
            ),
            dataset=small_digits,
        )
    assert not (tmp_path / "no").exists()
    with pytest.raises(ConfigError, match="must be >= 1"):
        TrainConfig(y_temperature=0.5).validate()
    with pytest.raises(ConfigError, match="give that number of epochs"):
        TrainConfig(y_temperature=2.0).validate()


@pytest.mark.parametrize("network", ["mlp", "conv"])
def test_a_separate_body_for_q_y_is_its_own_network_and_gives_the_same_marginal(
    network, small_digit_images, tmp_path
):
    """--y-network separate: q(y|x) reads a fresh copy of the body (same layers, own weights),
    and q_z(x) is still sum_y q(y|x) q(z|x,y) as the declared sites give it."""
    config = TrainConfig(
        prior="gmm",
        guide="categorical",
        network=network,
        hidden=(16,),
        conv_channels=(4, 8),
        latent_dim=3,
        components=4,
        y_network="separate",
    )
    _, guide = build(config, small_digit_images.data_shape)
    pairs = list(zip(guide.body.parameters(), guide.y_body.parameters(), strict=True))
    assert pairs and all(a.shape == b.shape for a, b in pairs)
    assert not any(torch.equal(a, b) for a, b in pairs if a.dim() > 1)  # weights drawn afresh
    assert guide.y_head.in_features == guide.y_body.out_features
    x = small_digit_images.train_x[:5]
    h = guide.encode(x)
    logits = guide.y_dist(h, {}).logits
    torch.testing.assert_close(logits, guide.y_head(guide.y_body(x)).log_softmax(-1))
    z = torch.randn(5, 3)
    parts = torch.stack([guide.z_dist(h, {"y": torch.full((5,), k)}).log_prob(z) for k in range(4)], -1)
    torch.testing.assert_close(guide.q_z(x).log_prob(z), (logits.log_softmax(-1) + parts).logsumexp(-1))
    run = train(
        TrainConfig(**{**config.to_dict(), "epochs": 2, "batch_size": 50, "out": str(tmp_path / "r")}),
        dataset=small_digit_images,
    )
    assert run.config.y_network == "separate"


def test_init_spread_sets_the_spread_of_the_initial_component_means():
    """--init-spread s: the gmm prior's initial means are N(0, s^2) draws (the same draws scaled)."""
    shape = 20
    means = {}
    for spread in (1.0, 0.16):
        torch.manual_seed(0)
        model, _ = build(
            TrainConfig(
                prior="gmm",
                guide="categorical",
                hidden=(8,),
                latent_dim=64,
                components=10,
                init_spread=spread,
            ),
            shape,
        )
        means[spread] = model.prior.locs.detach()
    assert means[1.0].std() == pytest.approx(1.0, rel=0.1)
    torch.testing.assert_close(means[0.16], 0.16 * means[1.0])
    with pytest.raises(ConfigError, match="init-spread"):
        TrainConfig(prior="gmm", init_spread=0.0).validate()


def test_a_recipe_is_printed_as_the_flags_that_differ_from_the_defaults():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "recipes.py"
    spec = importlib.util.spec_from_file_location("recipes_script", path)
    recipes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipes)
    config = TrainConfig(
        **dict(recipes.SCRATCH_ROWS)["dilokthanakul (paper), K = 16"], seed=3, out="x"
    ).to_dict()
    flags = recipes.recipe_flags(json.loads(json.dumps(config)))  # as config.json stores it
    assert flags == (
        "--prior dilokthanakul --guide dilokthanakul --batch-size 50 --components 16 --hidden 500,500 "
        "--latent-dim 200 --lr 0.0001 --w-dim 150 --zprior-threshold 0.5"
    )
    again = TrainConfig(
        prior="dilokthanakul",
        guide="dilokthanakul",
        batch_size=50,
        components=16,
        hidden=(500, 500),
        latent_dim=200,
        lr=1e-4,
        w_dim=150,
        zprior_threshold=0.5,
    )
    assert again.to_dict() == {**config, "seed": 0, "out": None}
    # Rui Shu's GMVAE with his layout: q(y | x) on its own network, Glorot's init, means near 0
    config = TrainConfig(**dict(recipes.SCRATCH_ROWS)["GMVAE (Rui Shu), K = 16"]).to_dict()
    assert recipes.recipe_flags(json.loads(json.dumps(config))) == (
        "--prior gmm --guide categorical --batch-size 100 --components 16 --init-spread 0.16 "
        "--latent-dim 64 --mixture-weights uniform --weight-init glorot --y-network separate"
    )
