"""The configuration of a training run: the common settings plus the chosen parts' own options.

The common settings are the fields of :class:`TrainConfig` (``--latent-dim``,
``--epochs``, ...).  Each registered prior, guide and likelihood declares its
own options (:mod:`mixvae.options`); a config holds the values given for them
and reads the chosen parts' defaults for the rest, so that
``TrainConfig(prior="gmm", components=5)`` and ``config.components`` work as
if they were fields.  ``config.json`` stores the common fields and the chosen
parts' options in one flat mapping (the layout of mixvae 0.1, whose run
folders load unchanged).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from mixvae import options as _options
from mixvae.errors import ConfigError

#: bumped when a checkpoint written by an older mixvae can no longer be read
FORMAT_VERSION = 2
#: the checkpoint formats this mixvae reads (1: mixvae 0.1, no run id and no checksum)
READABLE_FORMATS = (1, 2)


#: the largest seed every generator mixvae seeds accepts (numpy's)
MAX_SEED = 2**32 - 1
#: sane bounds on sizes, checked before any tensor is built (a loaded config may be hostile)
SIZE_LIMITS = {
    "latent_dim": 65_536,
    "hidden": 65_536,
    "batch_size": 10_000_000,
    "eval_batch_size": 10_000_000,
    "particles": 100_000,
    "posthoc_components": 100_000,
    "epochs": 10_000_000,
    "checkpoint_every": 10_000_000,
    "eval_every": 10_000_000,
    "restarts": 10_000,
}


def torch_dtype(name: str) -> Any:
    """The :class:`torch.dtype` of ``--dtype NAME`` (float32 or float64)."""
    import torch

    return {"float32": torch.float32, "float64": torch.float64}[name]


def _opt(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass(init=False, eq=False)
class TrainConfig:
    """Everything that defines a training run; saved as ``config.json`` in the run folder.

    Each field is the CLI flag of the same name (``latent_dim`` is
    ``--latent-dim``).  Keywords that are not fields are the options of the
    parts (``components=5``, ``pseudo_inputs=200``, a plugin's own option):
    they are kept in :attr:`options` and read back as attributes.
    """

    prior: str = _opt("gmm", "prior over the latent code (see `mixvae list`)")
    guide: str = _opt("categorical", "encoder / variational family (see `mixvae list`)")
    dataset: str = _opt(
        "digits", "data set: a registered name (see `mixvae list`), an .npz / .npy file or a folder of images"
    )
    data_dir: str | None = _opt(None, "folder with the data files (default: ~/.cache/mixvae/DATASET)")
    download: bool = _opt(True, "download missing data files (--no-download to forbid)")
    binarize: str = _opt("none", "binarisation of the data: none | dynamic", choices=("none", "dynamic"))
    likelihood: str = _opt("bernoulli", "decoder likelihood: bernoulli (data in [0, 1]) | gaussian")
    latent_dim: int = _opt(10, "dimension D of z")
    init_from: str | None = _opt(
        None,
        "warm start (VaDE-style pretraining): copy the encoder and decoder of this trained run "
        "(same --guide, --latent-dim, --hidden, data) and fit a gmm / gmm-full prior to its encoder "
        "means (other priors keep their own initialisation)",
    )
    init_fits: int = _opt(
        1,
        "with --init-from: fit the prior to the codes this many times (GMM seeds SEED, SEED+1, ...) and "
        "start from the fit whose model has the best ELBO on the training data (no labels)",
    )
    restarts: int = _opt(
        1,
        "train this many starts (seed SEED and seeds drawn from it) for --restart-epochs each and go on "
        "with the one whose ELBO of the training data is highest (no labels, no held-out data)",
    )
    restart_epochs: int = _opt(10, "with --restarts: the epochs each start trains before the choice")
    posthoc_components: int = _opt(10, "components of the post-hoc GMM fitted to q(z) (posthoc-gmm)")
    posthoc_bic: bool = _opt(False, "choose the post-hoc GMM's K <= --posthoc-components by BIC")
    labels_per_class: int | None = _opt(
        None, "semi-supervised: keep the labels of this many training points per class"
    )
    class_weight: float = _opt(
        50.0, "semi-supervised: weight of the classification loss of q(y|x) (Kingma et al. 2014)"
    )
    network: str = _opt(
        "auto",
        "network body of the encoder and the decoder: auto (conv for images (C, H, W), mlp for vectors) "
        "| mlp | conv | a plugin's network (see `mixvae list`)",
    )
    hidden: tuple[int, ...] = _opt(
        (512, 512), "hidden layer sizes of the mlp network, comma-separated ('' for linear)"
    )
    weight_init: str = _opt(
        "torch",
        "initial weights of the networks mixvae builds (their linear, convolutional and embedding layers; "
        "not your own encoder= / decoder= modules): torch (PyTorch's defaults) | glorot (Glorot-uniform "
        "weights and zero biases, TensorFlow's and Keras's default, as in Rui Shu's GMVAE)",
        choices=("torch", "glorot"),
    )
    epochs: int = _opt(100, "number of passes over the training data")
    batch_size: int = _opt(128, "minibatch size")
    lr: float = _opt(1e-3, "Adam learning rate")
    lr_decay: float = _opt(
        1.0,
        "step decay of the learning rate: multiply --lr by this factor every --lr-decay-epochs epochs, "
        "never below --lr-min (1: constant; VaDE's recipe: --lr 0.002 --lr-decay 0.9 --lr-min 0.0002)",
    )
    lr_decay_epochs: int = _opt(10, "epochs between two steps of --lr-decay")
    lr_min: float = _opt(0.0, "floor of the decayed learning rate (--lr-decay; never above --lr)")
    warmup_epochs: float = _opt(
        0.0, "KL warm-up: scale every latent site by beta rising linearly to 1 over this many epochs"
    )
    mutual_info: float = _opt(
        0.0,
        "weight lambda of the mutual information I(x; y) between the points of a minibatch and the "
        "guide's discrete site y, subtracted from the loss (lambda = 1 replaces each point's "
        "KL(q(y|x) || p(y)) by the minibatch's aggregate KL(q(y) || p(y)): confident, balanced clusters; "
        "not an ELBO, so the held-out ELBO stays the plain one); for guides that provide y (categorical)",
    )
    y_temperature: float = _opt(
        1.0,
        "deterministic annealing of the guide's discrete site y: each point's entropy H(q(y|x)) weighs T "
        "in the loss (the ELBO's weight is 1), T falling linearly from this value to 1 over "
        "--y-temperature-epochs (soft cluster assignments early); for guides that provide y (categorical)",
    )
    y_temperature_epochs: float = _opt(0.0, "epochs over which --y-temperature falls to 1")
    kl: str = _opt(
        "analytic",
        "KL terms when nothing is enumerated: analytic (closed form where torch has one, "
        "TraceMeanField_ELBO) | mc (Monte Carlo, TraceEnum_ELBO)",
        choices=("analytic", "mc"),
    )
    objective: str = _opt(
        "auto",
        "how the training loss is computed: auto (the direct ELBO, read from the parts' declared sites "
        "and checked against Pyro's on the first step, wherever it applies; Pyro's ELBO elsewhere) | "
        "pyro (always TraceEnum_ELBO / TraceMeanField_ELBO) | iwae (the importance-weighted bound with "
        "--particles K, discrete sites summed out inside each weight)",
        choices=("auto", "pyro", "iwae"),
    )
    particles: int = _opt(
        1,
        "samples of the latents per datapoint: the K of --objective iwae (K = 1: the ELBO); with an ELBO, "
        "M draws averaged (Pyro's num_particles, vectorised; Dilokthanakul et al.'s M)",
    )
    jit: bool = _opt(
        False,
        "compile the step with Pyro's JIT ELBOs (JitTraceEnum_ELBO, JitTraceMeanField_ELBO; torch.jit.trace, "
        "deprecated in torch 2) instead of the direct ELBO (see `mixvae list --elbos`)",
    )
    clip_grad: float | None = _opt(None, "clip the gradient norm to this value (default: no clipping)")
    weight_decay: float = _opt(
        0.0, "decoupled weight decay (AdamW) of the networks' weight matrices and kernels (0: plain Adam)"
    )
    seed: int = _opt(0, "random seed")
    checkpoint_every: int = _opt(10, "write checkpoint.pt every N epochs (and after the first and the last)")
    checkpoint_minutes: float = _opt(
        5.0, "also write checkpoint.pt when this many minutes have passed since the last one (mid-epoch too)"
    )
    eval_batch_size: int = _opt(1000, "minibatch size for held-out evaluation")
    eval_every: int = _opt(
        1,
        "score the held-out data (ELBO and, with labels, clustering) every N epochs and after the first "
        "and the last; the other epochs' lines of metrics.jsonl hold the training numbers alone",
    )
    logger: str = _opt(
        "none",
        "experiment tracking through Lightning's loggers, into the run folder: none | csv | tensorboard | "
        "mlflow | wandb (offline)",
        choices=("none", "csv", "tensorboard", "mlflow", "wandb"),
    )
    device: str = _opt("cpu", "torch device: cpu | cuda")
    dtype: str = _opt(
        "float32",
        "floating dtype of the parameters and the data: float32 | float64",
        choices=("float32", "float64"),
    )
    out: str | None = _opt(None, "run folder (default: runs/PRIOR-GUIDE-DATASET-TIMESTAMP)")
    overwrite: bool = _opt(False, "replace a run already in --out")
    plugins: tuple[str, ...] = _opt(
        (),
        "modules that registered this run's parts, imported before it is rebuilt (recorded by "
        "training, see mixvae.plugins; not a flag: load a plugin with --plugin MODULE)",
        flag=False,
    )
    #: the part options given (by name); the chosen parts' defaults fill in the rest
    options: dict[str, Any] = field(default_factory=dict, metadata={"flag": False})

    def __init__(self, **settings: Any) -> None:
        for f in dataclasses.fields(TrainConfig):
            if f.name in settings:
                value = settings.pop(f.name)
            elif f.default_factory is not dataclasses.MISSING:
                value = f.default_factory()
            else:
                value = f.default
            object.__setattr__(self, f.name, value)
        object.__setattr__(self, "options", dict(self.options))
        self.options.update(settings)  # the rest are part options, checked by validate()
        self.__post_init__()

    def __post_init__(self) -> None:
        hidden = (self.hidden,) if isinstance(self.hidden, int) else self.hidden
        try:
            self.hidden = tuple(int(h) for h in hidden)
        except (TypeError, ValueError):
            raise ConfigError(
                f"hidden must be layer widths such as (256, 256), got {self.hidden!r}"
            ) from None
        self.plugins = (self.plugins,) if isinstance(self.plugins, str) else tuple(self.plugins)
        specs = _options.specs()
        for name, value in self.options.items():  # JSON gives lists for tuple options
            if isinstance(value, list) and name in specs and _options.is_tuple_option(specs[name]):
                self.options[name] = tuple(value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TrainConfig) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable, like a dataclass with eq

    # -- part options as attributes ------------------------------------------------------------
    def _chosen(self) -> list[tuple[str, str]]:
        return [
            ("prior", self.prior),
            ("guide", self.guide),
            ("likelihood", self.likelihood),
            ("network", self.network),
        ]

    def __getattr__(self, name: str) -> Any:  # only for names that are not fields
        if name.startswith("_") or name == "options":
            raise AttributeError(name)
        given = self.__dict__.get("options", {})
        if name in given:
            return given[name]
        try:
            return _options.default_for(name, self._chosen())
        except KeyError:
            raise AttributeError(f"TrainConfig has no setting or part option {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _FIELDS or name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self.options[name] = value

    def part_options(self) -> dict[str, Any]:
        """The options of the chosen prior, guide and likelihood, given or default."""
        names = [n for kind, part in self._chosen() for n in _options.option_names(kind, part)]
        return {n: getattr(self, n) for n in dict.fromkeys(names)}

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first impossible setting and its fix."""
        positive = {
            "latent_dim": "--latent-dim",
            "posthoc_components": "--posthoc-components",
            "epochs": "--epochs",
            "batch_size": "--batch-size",
            "checkpoint_every": "--checkpoint-every",
            "eval_batch_size": "--eval-batch-size",
            "eval_every": "--eval-every",
            "particles": "--particles",
        }
        for name, flag in positive.items():
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{flag} must be a positive integer, got {value!r}")
        if any(h < 1 for h in self.hidden):
            raise ConfigError(f"--hidden sizes must be positive, got {self.hidden!r}")
        for f in dataclasses.fields(self):  # NaN and inf pass every comparison below
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"--{f.name.replace('_', '-')} must be a finite number, got {value!r}")
        if not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(
                f"--seed must be an integer in 0..{MAX_SEED} (numpy's range), got {self.seed!r}"
            )
        for name, limit in SIZE_LIMITS.items():
            values = getattr(self, name)
            for value in values if isinstance(values, tuple) else (values,):
                if isinstance(value, int) and value > limit:
                    raise ConfigError(
                        f"--{name.replace('_', '-')} {value} is larger than mixvae builds (at most {limit}); "
                        "was the configuration edited?"
                    )
        if not self.lr > 0:
            raise ConfigError(f"--lr must be positive, got {self.lr!r}")
        if not 0 < self.lr_decay <= 1:
            raise ConfigError(f"--lr-decay is a factor in (0, 1] (1: constant), got {self.lr_decay!r}")
        if self.lr_decay_epochs < 1:
            raise ConfigError(f"--lr-decay-epochs must be a positive integer, got {self.lr_decay_epochs!r}")
        if not self.lr_min >= 0:
            raise ConfigError(f"--lr-min must be >= 0, got {self.lr_min!r}")
        if self.labels_per_class is not None and self.labels_per_class < 1:
            raise ConfigError(f"--labels-per-class must be a positive integer, got {self.labels_per_class!r}")
        if self.class_weight < 0:
            raise ConfigError(f"--class-weight must be >= 0, got {self.class_weight!r}")
        if self.clip_grad is not None and not self.clip_grad > 0:
            raise ConfigError(f"--clip-grad must be positive, got {self.clip_grad!r}")
        if not self.weight_decay >= 0:
            raise ConfigError(f"--weight-decay must be >= 0 (0: none), got {self.weight_decay!r}")
        if not self.checkpoint_minutes > 0:
            raise ConfigError(f"--checkpoint-minutes must be positive, got {self.checkpoint_minutes!r}")
        if self.mutual_info < 0:
            raise ConfigError(f"--mutual-info must be >= 0, got {self.mutual_info!r}")
        if self.y_temperature < 1:
            raise ConfigError(f"--y-temperature must be >= 1 (1: the ELBO), got {self.y_temperature!r}")
        if self.y_temperature_epochs < 0:
            raise ConfigError(f"--y-temperature-epochs must be >= 0, got {self.y_temperature_epochs!r}")
        if self.y_temperature > 1 and not self.y_temperature_epochs:
            raise ConfigError(
                "--y-temperature anneals to 1 over --y-temperature-epochs; give that number of epochs"
            )
        if self.warmup_epochs < 0:
            raise ConfigError(f"--warmup-epochs must be >= 0, got {self.warmup_epochs!r}")
        if self.init_fits < 1:
            raise ConfigError(f"--init-fits must be >= 1, got {self.init_fits!r}")
        if self.init_fits > 1 and self.init_from is None:
            raise ConfigError("--init-fits chooses among fits of a warm start; give --init-from RUN")
        late = self.restarts > 1 and self.restart_epochs > self.epochs
        if self.restarts < 1 or self.restart_epochs < 1 or late:
            raise ConfigError(
                f"--restarts must be >= 1 and --restart-epochs between 1 and --epochs {self.epochs}, "
                f"got {self.restarts!r} and {self.restart_epochs!r}"
            )
        for f in dataclasses.fields(self):  # the fields declared with choices
            choices = f.metadata.get("choices")
            if choices is not None and getattr(self, f.name) not in choices:
                flag = "--" + f.name.replace("_", "-")
                allowed = " or ".join(map(repr, choices))
                raise ConfigError(f"{flag} must be {allowed}, got {getattr(self, f.name)!r}")
        if self.jit and self.objective == "iwae":
            raise ConfigError("--jit compiles Pyro's ELBOs; --objective iwae is not one of them: drop one")
        if self.jit and self.warmup_epochs:
            raise ConfigError(
                "--jit traces the step once, so a KL warm-up beta that changes every step cannot be "
                "compiled; drop --warmup-epochs or --jit"
            )
        if self.binarize == "dynamic" and self.likelihood != "bernoulli":
            raise ConfigError("--binarize dynamic needs --likelihood bernoulli")
        for module in self.plugins:
            if not isinstance(module, str) or not all(p.isidentifier() for p in module.split(".")):
                raise ConfigError(f"plugins must be module names such as 'package.module', got {module!r}")
        self._validate_options()

    def _validate_options(self) -> None:
        specs = _options.specs()
        chosen = self._chosen()
        takes = {n for kind, part in chosen for n in _options.option_names(kind, part)}
        for name, value in self.options.items():
            spec = specs.get(name)
            if spec is None:
                valid = ", ".join("--" + n.replace("_", "-") for n in sorted(takes)) or "none"
                raise ConfigError(
                    f"unknown setting {name!r}: no field of TrainConfig and no registered part's option "
                    f"(the chosen parts take: {valid}; a plugin's option needs its plugin loaded)"
                )
            if name not in takes and spec.exclusive and value != _options.default_for(name, chosen):
                raise ConfigError(
                    f"{spec.flag} {value} applies to {spec.describe_owners()}; prior {self.prior!r}, guide "
                    f"{self.guide!r} and likelihood {self.likelihood!r} do not take it: drop the flag"
                )
            spec.check(value)
        for name in takes:
            specs[name].check(getattr(self, name))

    def command_line(self, **changes: Any) -> str:
        """The ``mixvae train`` command that makes this configuration (with ``changes``):
        every setting that differs from its default, as its flag."""
        import shlex

        config = TrainConfig(**{**self.to_dict(), **changes})
        words = ["mixvae", "train"]
        for module in config.plugins:
            words += ["--plugin", module]
        for name, value in config.to_dict().items():
            if name == "plugins":
                continue
            default = (
                getattr(_DEFAULTS, name) if name in _FIELDS else _options.default_for(name, config._chosen())
            )
            same = tuple(value) == tuple(default) if isinstance(value, list | tuple) else value == default
            if (same and name not in changes) or value is None:
                continue
            flag = "--" + name.replace("_", "-")
            if isinstance(value, bool):
                words.append(flag if value else f"--no-{name.replace('_', '-')}")
            elif isinstance(value, list | tuple):
                words += [flag, ",".join(map(str, value)) or "''"]
            else:
                words += [flag, shlex.quote(str(value))]
        return " ".join(words)

    # -- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The common fields and the chosen parts' options, one flat mapping (``config.json``)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"}
        d["hidden"] = list(self.hidden)
        d["plugins"] = list(self.plugins)
        d.update(self.part_options())
        return d

    def settings(self) -> dict[str, Any]:
        """Every setting as one flat mapping: the fields and every registered part's option
        (given, or the default the chosen parts would use), as in mixvae 0.1's flat config."""
        d = self.to_dict()
        d.update({name: getattr(self, name) for name in _options.specs()})
        d.update(self.options)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The inverse of :meth:`to_dict`; keys that no field and no registered part's option
        names are refused (a run written by another mixvae version, or whose plugin is not loaded)."""
        specs = _options.specs()
        unknown = sorted(k for k in d if k not in _FIELDS and k not in specs)
        if unknown:
            raise ConfigError(
                f"unknown configuration keys {unknown}; this run was written by another mixvae version "
                "or with a plugin that is not loaded (--plugin MODULE)"
            )
        if "network" not in d:  # mixvae 0.1 had one network, the MLP
            d = {**d, "network": "mlp"}
        return cls(**d)


_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))
_DEFAULTS = TrainConfig()
