"""The seed systems' recipes, trained from scratch: the rows of the "from scratch" table of
``benchmarks/results.py`` (``--only scratch``).

Each recipe is an ordinary mixvae configuration: the prior, the guide and every setting the
recipe changes from mixvae's defaults (printed beside its numbers as the ``mixvae train`` flags
that reproduce it). No labels are used at any step; the numbers are those of the last epoch (no
selection of seed, restart or epoch).
"""

from __future__ import annotations

from typing import Any

from mixvae import TrainConfig

#: Rui Shu's GMVAE (github.com/RuiShu/vae-clustering, gmvae_k.py): z of 64 dimensions, 512-512
#: networks, batch 100, Adam at 1e-3, uniform p(y), the exact sum over y, dynamic binarisation,
#: and his layout: q(y | x) on a network of its own (``--y-network separate``), every layer
#: Glorot-initialised with zero biases (``--weight-init glorot``), so that p(z | y), a linear map
#: of the one-hot y, starts its means near 0 (``--init-spread 0.16``). Where mixvae differs:
#: q(z | x, y) reads y through a learned embedding added after its body (his reads [x, one-hot y]
#: at its first layer), and p(z | y)'s scales start at 1 (his variances at softplus of a Glorot
#: draw, about 0.7). Without the layout (a shared body, PyTorch's init, spread 1: the recipe
#: of mixvae's first measurements) seed 0 at K = 16 reads 71.6% (majority) after 10,000 steps;
#: with it 77.3%, and his K = 16 log (logs/gmvae_k=16.log.0) 78.4%.
SHU = {
    "prior": "gmm",
    "guide": "categorical",
    "mixture_weights": "uniform",
    "latent_dim": 64,
    "batch_size": 100,
    "y_network": "separate",
    "weight_init": "glorot",
    "init_spread": 0.16,
}
#: Dilokthanakul et al. 2016 (github.com/Nat-D/GMVAE): hidden 500, x (here z) of 200 and w of
#: 150 dimensions, Adam at 1e-4, batch 50, the z-prior free bits lambda = 0.5, grey-level data.
#: What the authors' code does otherwise (main.lua, run.sh, models/): its MNIST command trains
#: a convolutional encoder and decoder with batch normalisation for 100 epochs of 60,000 images;
#: its table's means (82.3% / 87.8%) are with M = 10 draws per point (``--particles 10``); its
#: prior network from w has one tanh layer of 500 (``--w-hidden 500``; mixvae's default 128);
#: its free bits switch the z-prior gradient on and off by the minibatch's mean KL, mixvae's
#: per point. This recipe is the fully connected reading at M = 1.
DILOKTHANAKUL = {
    "prior": "dilokthanakul",
    "guide": "dilokthanakul",
    "hidden": (500, 500),
    "latent_dim": 200,
    "w_dim": 150,
    "lr": 1e-4,
    "batch_size": 50,
    "zprior_threshold": 0.5,
    "binarize": "none",
}

#: (name, settings) of the rows, in the table's order
SCRATCH_ROWS: list[tuple[str, dict[str, Any]]] = [
    ("GMVAE (Rui Shu), K = 10", {**SHU, "components": 10}),
    ("GMVAE (Rui Shu), K = 16", {**SHU, "components": 16}),
    ("dilokthanakul (paper), K = 10", {**DILOKTHANAKUL, "components": 10}),
    ("dilokthanakul (paper), K = 16", {**DILOKTHANAKUL, "components": 16}),
]


def recipe_flags(config: dict[str, Any]) -> str:
    """The ``mixvae train`` flags of a run's recorded configuration that differ from mixvae's
    defaults (data, seed, epochs, folder and ``--eval-every`` left out)."""
    defaults = TrainConfig(prior=config["prior"], guide=config["guide"])
    flags = [f"--prior {config['prior']} --guide {config['guide']}"]
    skip = {
        "prior",
        "guide",
        "dataset",
        "data_dir",
        "download",
        "seed",
        "out",
        "overwrite",
        "epochs",
        "plugins",
        "eval_every",  # which epochs are scored, not how the run trains
    }
    for name, value in sorted(config.items()):
        if name in skip or not hasattr(defaults, name):
            continue
        default = getattr(defaults, name)
        if (list(default) if isinstance(default, tuple) else default) == value:
            continue
        shown = ",".join(map(str, value)) if isinstance(value, list) else value
        flags.append(f"--{name.replace('_', '-')} {shown}")
    return " ".join(flags)
