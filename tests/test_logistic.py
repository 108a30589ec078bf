"""The discretized logistic likelihood (and its mixture) against closed forms; bits per dimension."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mixvae import TrainConfig, train
from mixvae.cli import main
from mixvae.data import from_arrays
from mixvae.evaluation import evaluate_run
from mixvae.models.logistic import DiscretizedLogisticMixture, discretized_logistic_log_prob

LEVELS = torch.arange(256, dtype=torch.float64) / 255.0


@pytest.mark.parametrize(("loc", "log_scale"), [(0.0, -2.0), (0.93, -4.5), (-1.4, 0.7), (0.2, -6.9)])
def test_the_256_bins_are_a_distribution_and_each_is_a_difference_of_sigmoids(loc, log_scale):
    loc_t, ls = torch.tensor(loc, dtype=torch.float64), torch.tensor(log_scale, dtype=torch.float64)
    log_p = discretized_logistic_log_prob(LEVELS, loc_t, ls)
    # (bins whose mass underflows 1e-5 take the density at their centre, PixelCNN++'s approximation)
    assert float(torch.logsumexp(log_p, 0)) == pytest.approx(0.0, abs=1e-4 if log_scale < -6 else 1e-6)
    s, x = math.exp(log_scale), 2 * LEVELS - 1

    def cdf(v):
        return torch.sigmoid((v - loc) / s)

    exact = torch.cat(
        [cdf(x[:1] + 1 / 255), cdf(x[1:-1] + 1 / 255) - cdf(x[1:-1] - 1 / 255), 1 - cdf(x[-1:] - 1 / 255)]
    )
    big = exact > 1e-5  # where the bin's mass does not underflow, the closed form itself
    assert torch.allclose(log_p[big], exact[big].log(), atol=1e-8)


def test_the_mixture_sums_its_components_with_their_weights():
    g = torch.Generator().manual_seed(0)
    logits, locs = torch.randn(2, 3, 5, generator=g), torch.randn(2, 3, 5, generator=g) * 0.6
    log_scales = torch.randn(2, 3, 5, generator=g) - 2
    d = DiscretizedLogisticMixture(logits, locs, log_scales, event_dims=1)  # batch (2,), M = 3, event (5,)
    assert d.batch_shape == (2,) and d.event_shape == (5,)
    v = LEVELS.float()[:, None, None].expand(256, 2, 5)
    per = d.log_prob_values(v)
    assert torch.allclose(torch.logsumexp(per, 0), torch.zeros(2, 5), atol=1e-5)
    x = torch.rand(2, 5, generator=g).mul(255).round().div(255)
    by_hand = torch.logsumexp(
        logits.log_softmax(1) + discretized_logistic_log_prob(x[:, None], locs, log_scales), 1
    ).sum(-1)
    assert torch.allclose(d.log_prob(x), by_hand)


def test_samples_lie_on_the_grid_with_the_bins_frequencies():
    torch.manual_seed(0)
    loc, ls = torch.tensor([[0.1]]), torch.tensor([[-2.5]])
    d = DiscretizedLogisticMixture(torch.zeros(1, 1), loc, ls, event_dims=1)
    draws = d.sample((40000,)).flatten()
    assert bool(((draws * 255).round() == draws * 255).all())
    freq = torch.bincount((draws * 255).round().long(), minlength=256).double() / len(draws)
    probs = discretized_logistic_log_prob(LEVELS.float(), loc[0, 0], ls[0, 0]).exp().double()
    assert float((freq - probs).abs().sum()) < 0.05  # total variation of 40,000 draws


def _eight_bit_images(n: int = 240) -> np.ndarray:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(4, 3, 8, 8))
    noise = rng.integers(-20, 21, size=(n, 3, 8, 8))
    return np.clip(base[rng.integers(0, 4, size=n)] + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("components", [1, 3])
def test_a_conv_vae_with_the_logistic_likelihood_trains_and_reports_bits_per_dim(components, tmp_path):
    data = from_arrays(_eight_bit_images())
    run = train(
        TrainConfig(
            prior="gmm",
            guide="gaussian",
            likelihood="logistic",
            logistic_components=components,
            conv_channels=(8, 16),
            conv_features=32,
            latent_dim=4,
            components=4,
            epochs=30,
            batch_size=32,
            lr=3e-3,
        ),
        dataset=data,
        out=str(tmp_path / "run"),
        progress=False,
        figures=False,
    )
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["heldout_elbo"] > metrics[0]["heldout_elbo"] + 20.0
    assert run.model.decoder.params(torch.zeros(2, 4)).shape == (2, 2 if components == 1 else 9, 3, 8, 8)
    result = evaluate_run(tmp_path / "run", iw_samples=20, figures=False, dataset=data)
    assert result["bits_per_dim"] == pytest.approx(-result["log_likelihood"] / (3 * 8 * 8 * math.log(2)))
    assert 0.0 < result["bits_per_dim"] < 8.0  # better than a uniform over the 256 levels


def test_bits_per_dim_only_where_log_p_is_a_mass(tmp_path, capsys):
    grey = from_arrays(np.random.default_rng(1).random((200, 16)).astype(np.float32))
    for name, binarize in (("grey", "none"), ("binary", "dynamic")):
        train(
            TrainConfig(
                prior="standard", guide="gaussian", hidden=(8,), latent_dim=2, epochs=1, binarize=binarize
            ),
            dataset=grey,
            out=str(tmp_path / name),
            progress=False,
            figures=False,
        )
    assert "bits_per_dim" not in evaluate_run(tmp_path / "grey", iw_samples=5, figures=False, dataset=grey)
    assert "bits_per_dim" in evaluate_run(tmp_path / "binary", iw_samples=5, figures=False, dataset=grey)
    capsys.readouterr()


def test_logistic_data_must_lie_in_the_unit_interval(tmp_path, capsys):
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32))
    code = main(
        [
            "train",
            "--dataset",
            str(tmp_path / "d.npz"),
            "--likelihood",
            "logistic",
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert code == 2 and "outside the [0, 1] the logistic likelihood needs" in capsys.readouterr().err
