"""Networks are parts: mlp and conv for any shape, a user's own modules, and how each is refused."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from mixvae import TrainConfig, build, load_run, train
from mixvae.data import Dataset
from mixvae.errors import ConfigError
from mixvae.networks import NETWORKS, resolve
from tests.conftest import run_readme_block

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32), (2, 7, 9)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("network", ["mlp", "conv"])
def test_a_network_keeps_the_shape_of_the_data(network, shape):
    config = TrainConfig(network=network, latent_dim=3, hidden=(16,), conv_channels=(4, 8), conv_features=16)
    body = NETWORKS[network].encoder(config, shape)
    assert body(torch.zeros(5, *shape)).shape == (5, body.out_features)
    net = NETWORKS[network].decoder(config, shape, 2)
    # any leading shape of z: particles, enumerated components
    assert net(torch.zeros(4, 5, 3)).shape == (4, 5, 2, *shape)
    assert net(torch.zeros(6, 3)).shape == (6, 2, *shape)


def test_residual_blocks_add_layers_and_keep_shapes():
    config = TrainConfig(network="conv", latent_dim=2, conv_channels=(4,), conv_blocks=2, conv_features=8)
    plain = TrainConfig(network="conv", latent_dim=2, conv_channels=(4,), conv_blocks=0, conv_features=8)
    body = NETWORKS["conv"].encoder(config, (1, 8, 8))
    count = sum(p.numel() for p in body.parameters())
    assert count > sum(p.numel() for p in NETWORKS["conv"].encoder(plain, (1, 8, 8)).parameters())
    assert NETWORKS["conv"].decoder(config, (1, 8, 8), 1)(torch.zeros(3, 2)).shape == (3, 1, 8, 8)


def test_auto_is_conv_for_images_and_mlp_for_vectors():
    assert resolve("auto", (1, 8, 8)) == "conv"
    assert resolve("auto", (64,)) == "mlp"
    assert resolve("mlp", (1, 8, 8)) == "mlp"
    model, _ = build(TrainConfig(latent_dim=2, hidden=(8,), conv_channels=(4,), conv_features=8), (1, 8, 8))
    assert model.config.network == "conv"
    model, _ = build(TrainConfig(latent_dim=2, hidden=(8,)), 64)
    assert model.config.network == "mlp"


def test_conv_is_refused_for_vectors_and_too_many_stages():
    with pytest.raises(ConfigError, match=r"--network conv takes images of shape \(C, H, W\)"):
        build(TrainConfig(network="conv", latent_dim=2), 64)
    with pytest.raises(ConfigError, match="shrink 8x8 images below one pixel; give fewer stages"):
        build(TrainConfig(network="conv", latent_dim=2, conv_channels=(4, 4, 4, 4)), (1, 8, 8))
    with pytest.raises(ConfigError, match="--conv-channels must be integers"):
        TrainConfig(network="conv", conv_channels=(4, "x")).validate()


def _images(n_train: int = 300, n_test: int = 100, shape=(3, 8, 8)) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n_train + n_test, *shape, generator=g)
    return Dataset("mine", x[:n_train], x[n_train:])


class Encoder(nn.Module):
    """A user's encoder: (B, 3, 8, 8) -> (B, 32)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.out = nn.Linear(8 * 8 * 8, 32)

    def forward(self, x):
        return torch.tanh(self.out(torch.relu(self.conv(x)).flatten(1)))


class Decoder(nn.Module):
    """A user's decoder: (B, D) -> (B, 3, 8, 8), one Bernoulli logit per value."""

    def __init__(self, latent_dim: int, channels: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(latent_dim, 8 * 4 * 4)
        self.up = nn.ConvTranspose2d(8, channels, 4, stride=2, padding=1)
        self.channels = channels

    def forward(self, z):
        return self.up(torch.relu(self.fc(z)).unflatten(-1, (8, 4, 4)))


def test_your_own_modules_train_save_and_load(tmp_path):
    data = _images()
    config = TrainConfig(
        prior="gmm", guide="categorical", latent_dim=3, components=4, epochs=2, batch_size=50
    )
    run = train(
        config,
        dataset=data,
        encoder=Encoder(),
        decoder=Decoder(3),
        out=str(tmp_path / "run"),
        progress=False,
        figures=False,
    )
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["network"] == "given"
    # the guide's heads sit on the user's body
    assert run.guide.body.module.out.out_features == 32
    with pytest.raises(
        ConfigError, match=r"pass them again .*load_run\(RUN, encoder=\.\.\., decoder=\.\.\.\)"
    ):
        load_run(tmp_path / "run")
    again = load_run(tmp_path / "run", encoder=Encoder(), decoder=Decoder(3))
    # the modules passed in are copied: the same objects may be passed again, and stay as they were
    encoder, decoder = Encoder(), Decoder(3)
    before = encoder.out.weight.detach().clone()
    train(
        config,
        dataset=data,
        encoder=encoder,
        decoder=decoder,
        out=str(tmp_path / "b"),
        progress=False,
        figures=False,
    )
    assert type(encoder) is Encoder and torch.equal(encoder.out.weight, before)
    load_run(tmp_path / "b", encoder=encoder, decoder=decoder)
    x = data.test_x[:20]
    torch.manual_seed(0)
    a = run.guide.q_mean(x)
    torch.manual_seed(0)
    assert torch.equal(a, again.guide.q_mean(x))
    assert torch.equal(run.model.decoder.mean(a), again.model.decoder.mean(a))


def test_your_own_modules_are_checked_in_one_line():
    config = TrainConfig(prior="standard", guide="gaussian", latent_dim=3)
    with pytest.raises(
        ConfigError, match=r"must map z of shape \(B, 3\) to \(B, 3, 8, 8\).*it gave \(2, 2, 8, 8\)"
    ):
        build(config, (3, 8, 8), encoder=Encoder(), decoder=Decoder(3, channels=2))
    with pytest.raises(
        ConfigError, match=r"encoder module Encoder fails on an input of shape \(2, 1, 8, 8\)"
    ):
        build(config, (1, 8, 8), encoder=Encoder(), decoder=Decoder(3))
    with pytest.raises(ConfigError, match="pass both encoder= and decoder="):
        build(config, (3, 8, 8), encoder=Encoder())
    with pytest.raises(ConfigError, match=r"must be a torch\.nn\.Module"):
        build(config, (3, 8, 8), encoder=lambda x: x, decoder=Decoder(3))
    with pytest.raises(ConfigError, match="--network mlp and your own encoder= / decoder= modules: drop one"):
        build(TrainConfig(network="mlp", latent_dim=3), (3, 8, 8), encoder=Encoder(), decoder=Decoder(3))


def test_the_vampprior_pseudo_inputs_have_the_image_shape():
    config = TrainConfig(
        prior="vampprior", guide="gaussian", latent_dim=2, pseudo_inputs=7, conv_channels=(4,)
    )
    model, _ = build(config, (3, 8, 8))
    assert model.prior.pseudo_inputs().shape == (7, 3, 8, 8)
    assert model.prior.z_dist({}).event_shape == (2,)


def test_mixvae_0_1_style_plugins_get_one_line():
    from mixvae.errors import PluginError
    from mixvae.guides import GUIDES, GaussianGuide

    class OldGuide(GaussianGuide):
        @classmethod
        def from_config(cls, config, data_dim):
            return cls(data_dim, config.latent_dim, config.hidden)

    GUIDES.register("old-style-guide")(OldGuide)
    try:
        with pytest.raises(PluginError, match=r"from_config\(config, data_dim\), the mixvae 0.1 signature"):
            build(TrainConfig(prior="standard", guide="old-style-guide", latent_dim=2), 64)
    finally:
        GUIDES.drop_module(OldGuide.__module__)


def test_a_minibatch_of_another_shape_is_one_line(small_digit_images):
    import pyro
    from pyro.infer import SVI

    from mixvae.errors import DataError
    from mixvae.inference import DirectELBO, make_elbo

    model, guide = build(TrainConfig(network="mlp", hidden=(8,), latent_dim=2, components=3), 64)
    x = small_digit_images.train_x[:16]  # (16, 1, 8, 8) for a model of flat (64,) points
    for elbo in (DirectELBO(), make_elbo()):
        svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), elbo)
        with pytest.raises(DataError, match=r"minibatch of shape \(16, 1, 8, 8\) .* \(64,\); flatten it"):
            svi.step(x, num_data=600)


def test_readme_own_networks_example_runs(tmp_path, monkeypatch):
    namespace = run_readme_block("encoder=encoder", tmp_path, monkeypatch)
    run = namespace["run"]
    assert run.config.network == "given" and run.epoch == 2
    assert (tmp_path / "runs" / "own-networks" / "checkpoint.pt").is_file()


def test_shapes_mixvae_cannot_build_are_refused_before_allocating():
    with pytest.raises(ConfigError, match=r"data of shape \(2000000000,\) is not a size mixvae can build"):
        build(TrainConfig(network="mlp", latent_dim=2), 2_000_000_000)
    with pytest.raises(ConfigError, match="a data shape needs positive sizes"):
        build(TrainConfig(network="mlp", latent_dim=2), (1, 0, 8))
    with pytest.raises(
        ConfigError, match=r"--conv-channels 4096,4096 --conv-features 1000000 on data of shape"
    ):
        build(
            TrainConfig(network="conv", latent_dim=2, conv_channels=(4096, 4096), conv_features=1_000_000),
            (1, 64, 64),
        )


def _glorot_bound(weight: torch.Tensor) -> float:
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
    return (6.0 / (fan_in + fan_out)) ** 0.5


@pytest.mark.parametrize("network", ["mlp", "conv"])
def test_weight_init_glorot_sets_every_layer_mixvae_builds(network):
    """--weight-init glorot: Glorot-uniform weights (spread over their whole bound) and zero biases
    in every linear, conv and embedding layer of both sides; the default draws what it always drew."""
    from mixvae.networks import GLOROT_LAYERS

    settings = dict(
        prior="gmm", guide="categorical", y_network="separate", network=network, latent_dim=3, hidden=(16,)
    )
    settings.update(conv_channels=(4, 8), conv_features=16, seed=0)
    torch.manual_seed(0)
    model, guide = build(TrainConfig(**settings), (1, 8, 8))
    torch.manual_seed(0)
    again, _ = build(TrainConfig(**settings, weight_init="torch"), (1, 8, 8))
    torch.manual_seed(0)
    glorot, glorot_guide = build(TrainConfig(**settings, weight_init="glorot"), (1, 8, 8))
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    layers = [m for part in (glorot_guide, glorot) for m in part.modules() if isinstance(m, GLOROT_LAYERS)]
    kinds = {next(c.__name__ for c in GLOROT_LAYERS if isinstance(m, c)) for m in layers}
    assert {"Linear", "Embedding"} <= kinds and (network == "mlp" or {"Conv2d", "ConvTranspose2d"} <= kinds)
    assert len(layers) >= 6
    for layer in layers:
        bound = _glorot_bound(layer.weight)
        assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.8 * bound
        assert getattr(layer, "bias", None) is None or not layer.bias.any()
    # the torch default draws differently (its embedding is N(0, 1), its biases non-zero)
    assert not torch.equal(guide.y_embed.weight, glorot_guide.y_embed.weight)
    assert guide.y_head.bias.any()
    # the prior's own parameters are not network layers: --init-spread sets its means
    assert torch.equal(model.prior.scales, glorot.prior.scales)


def test_weight_init_glorot_leaves_your_own_modules_as_given():
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU())
    decoder = nn.Sequential(nn.Linear(2, 64))
    config = TrainConfig(prior="standard", guide="gaussian", latent_dim=2, weight_init="glorot")
    _, guide = build(config, 64, encoder=encoder, decoder=decoder)
    assert torch.equal(guide.body.module[1].weight, encoder[1].weight)
    assert torch.equal(guide.body.module[1].bias, encoder[1].bias) and encoder[1].bias.any()
    assert _glorot_bound(guide.head.weight) >= guide.head.weight.abs().max() and not guide.head.bias.any()
    with pytest.raises(ConfigError, match="--weight-init"):
        TrainConfig(weight_init="he").validate()
