"""Parts own their options: declared once, accepted by TrainConfig and the CLI, stored in config.json."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import pytest

from mixvae import PRIORS, TrainConfig, build
from mixvae.cli import build_parser
from mixvae.errors import ConfigError, PluginError
from mixvae.models import StandardPrior
from mixvae.options import option, option_names, specs


def test_todays_keywords_and_attributes_still_work():
    config = TrainConfig(
        prior="vampprior", guide="mixture", components=4, guide_components=2, pseudo_inputs=7
    )
    assert (config.components, config.guide_components, config.pseudo_inputs) == (4, 2, 7)
    assert config.pseudo_init == "random"  # the chosen prior's default
    assert config.w_dim is None and config.mixture_weights == "learned"  # other parts' defaults
    config.pseudo_init = "data"
    assert config.options["pseudo_init"] == "data"
    assert dataclasses.replace(config, components=6).components == 6
    assert dataclasses.replace(config, epochs=3).pseudo_init == "data"
    assert TrainConfig(components=10) == TrainConfig()  # the default given explicitly is the default


def test_config_json_holds_the_chosen_parts_options_and_round_trips():
    config = TrainConfig(prior="dilokthanakul", guide="dilokthanakul", w_dim=3, zprior_threshold=0.5)
    d = json.loads(config.to_json())
    assert (d["w_dim"], d["zprior_threshold"], d["components"]) == (3, 0.5, 10)
    assert "pseudo_inputs" not in d and "mixture_weights" not in d  # not options of these parts
    assert TrainConfig.from_dict(d) == config
    assert set(option_names("prior", "dilokthanakul")) == {
        "components",
        "w_dim",
        "zprior_threshold",
        "w_hidden",
    }
    # --w-hidden: the width of the prior's network from w (the authors' code: 500)
    model, _ = build(dataclasses.replace(config, w_hidden=500, hidden=(8,)), 12)
    assert model.prior.net[0].out_features == 500 and model.prior.net[-1].in_features == 500


@pytest.mark.parametrize(
    "settings,message",
    [
        ({"components": 0}, "--components must be a positive integer, got 0"),
        (
            {"prior": "vampprior", "guide": "gaussian", "pseudo_init": "zeros"},
            "--pseudo-init must be 'random' or",
        ),
        (
            {"prior": "dilokthanakul", "guide": "dilokthanakul", "zprior_threshold": -1.0},
            "--zprior-threshold must be >= 0",
        ),
        (
            {"guide": "mixture", "prior": "gmm", "guide_components": 0},
            "--guide-components must be a positive",
        ),
        ({"components": "ten"}, "--components must be of type int, got 'ten'"),
        (
            {"prior": "standard", "guide": "gaussian", "mixture_weights": "uniform"},
            "--mixture-weights uniform applies to prior gmm, gmm-full; prior 'standard'",
        ),
        ({"laplace_scale": 2}, "unknown setting 'laplace_scale': no field of TrainConfig and no registered"),
    ],
)
def test_bad_options_are_one_line_naming_the_flag(settings, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**settings).validate()


def test_a_new_part_brings_its_option_to_the_config_and_the_cli(monkeypatch):
    @dataclass
    class Options:
        spread: float = option(2.0, "the prior's scale", positive=True)

    class Spread(StandardPrior):
        pass

    Spread.Options = Options
    PRIORS.register("spread-test")(Spread)
    try:
        config = TrainConfig(prior="spread-test", guide="gaussian", spread=3.0)
        config.validate()
        assert config.spread == 3.0 and TrainConfig(prior="spread-test").spread == 2.0
        assert json.loads(config.to_json())["spread"] == 3.0
        assert TrainConfig.from_dict(json.loads(config.to_json())) == config
        args = build_parser().parse_args(["train", "--prior", "spread-test", "--spread", "0.5"])
        assert args.spread == 0.5
        assert "the prior's scale [prior spread-test]" in build_parser()._subparsers._group_actions[
            0
        ].choices["train"].format_help().replace("\n", " ").replace("  ", " ")
        with pytest.raises(ConfigError, match="--spread must be positive"):
            TrainConfig(prior="spread-test", spread=0.0).validate()
    finally:
        PRIORS.drop_module(Spread.__module__)
    assert "spread" not in specs()


def test_two_parts_cannot_give_one_option_two_types():
    @dataclass
    class Options:
        components: str = option("ten", "a clash with the mixtures' integer K")

    class Clash(StandardPrior):
        pass

    Clash.Options = Options
    with pytest.raises(
        PluginError,
        match=r"declares option 'components' as str, but .*prior gmm, gmm-full.* as int; rename it",
    ):
        PRIORS.register("clash-test")(Clash)
    assert "clash-test" not in PRIORS and specs()["components"].kind is int
