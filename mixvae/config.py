"""One flat configuration per training run, mapped one-to-one onto CLI flags."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from mixvae.errors import ConfigError

#: bumped when a checkpoint written by an older mixvae can no longer be read
FORMAT_VERSION = 1


def _opt(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as ``config.json`` in the run folder.

    Each field is the CLI flag of the same name (``latent_dim`` is ``--latent-dim``).
    """

    prior: str = _opt("gmm", "prior over the latent code (see `mixvae list`)")
    guide: str = _opt("categorical", "encoder / variational family (see `mixvae list`)")
    dataset: str = _opt("digits", "data set (see `mixvae list`)")
    data_dir: str | None = _opt(None, "folder with the data files (default: ~/.cache/mixvae/DATASET)")
    download: bool = _opt(True, "download missing data files (--no-download to forbid)")
    binarize: str = _opt("none", "binarisation of the data: none | dynamic", choices=("none", "dynamic"))
    likelihood: str = _opt("bernoulli", "decoder likelihood: bernoulli (data in [0, 1]) | gaussian")
    latent_dim: int = _opt(10, "dimension D of z")
    components: int = _opt(10, "number K of prior mixture components (and of the categorical guide)")
    guide_components: int | None = _opt(None, "components of the mixture guide (default: --components)")
    pseudo_inputs: int = _opt(500, "number K of learned pseudo-inputs of the vampprior")
    pseudo_init: str = _opt(
        "random",
        "initial vampprior pseudo-inputs: random (near-constant images, like Tomczak & Welling's default) "
        "| data (K distinct random training images)",
        choices=("random", "data"),
    )
    w_dim: int | None = _opt(None, "dimension of w for the dilokthanakul prior (default: --latent-dim)")
    zprior_threshold: float | None = _opt(
        None, "dilokthanakul z-prior free bits: KL(p(c|w,z) || p(c)) gets gradient only above this (nats)"
    )
    init_from: str | None = _opt(
        None,
        "warm start (VaDE-style pretraining): copy the encoder and decoder of this trained run "
        "(same --guide, --latent-dim, --hidden, data) and fit a gmm / gmm-full prior to its encoder "
        "means (other priors keep their own initialisation)",
    )
    mixture_weights: str = _opt(
        "learned",
        "mixing weights pi of the gmm / gmm-full priors: learned | uniform (fixed at 1/K, as in Rui "
        "Shu's GMVAE; with --init-from the fitted GMM's means and covariances are copied, not its weights)",
        choices=("learned", "uniform"),
    )
    posthoc_components: int = _opt(10, "components of the post-hoc GMM fitted to q(z) (posthoc-gmm)")
    posthoc_bic: bool = _opt(False, "choose the post-hoc GMM's K <= --posthoc-components by BIC")
    labels_per_class: int | None = _opt(
        None, "semi-supervised: keep the labels of this many training points per class"
    )
    class_weight: float = _opt(
        50.0, "semi-supervised: weight of the classification loss of q(y|x) (Kingma et al. 2014)"
    )
    hidden: tuple[int, ...] = _opt(
        (512, 512), "hidden layer sizes of encoder and decoder, comma-separated ('' for linear)"
    )
    epochs: int = _opt(100, "number of passes over the training data")
    batch_size: int = _opt(128, "minibatch size")
    lr: float = _opt(1e-3, "Adam learning rate")
    warmup_epochs: float = _opt(
        0.0, "KL warm-up: scale every latent site by beta rising linearly to 1 over this many epochs"
    )
    kl: str = _opt(
        "analytic",
        "KL terms when nothing is enumerated: analytic (closed form where torch has one, "
        "TraceMeanField_ELBO) | mc (Monte Carlo, TraceEnum_ELBO)",
        choices=("analytic", "mc"),
    )
    objective: str = _opt(
        "auto",
        "how the training loss is computed: auto (the built-in pairs compute Pyro's ELBO estimator "
        "directly from their distributions, without tracing; other pairs use Pyro) | pyro (always "
        "TraceEnum_ELBO / TraceMeanField_ELBO)",
        choices=("auto", "pyro"),
    )
    clip_grad: float | None = _opt(None, "clip the gradient norm to this value (default: no clipping)")
    seed: int = _opt(0, "random seed")
    checkpoint_every: int = _opt(10, "write checkpoint.pt every N epochs (and at the end)")
    eval_batch_size: int = _opt(1000, "minibatch size for held-out evaluation")
    device: str = _opt("cpu", "torch device: cpu | cuda")
    out: str | None = _opt(None, "run folder (default: runs/PRIOR-GUIDE-DATASET-TIMESTAMP)")
    overwrite: bool = _opt(False, "replace a run already in --out")
    plugins: tuple[str, ...] = _opt(
        (),
        "modules that registered this run's parts, imported before it is rebuilt (recorded by "
        "training, see mixvae.plugins; not a flag: load a plugin with --plugin MODULE)",
        flag=False,
    )

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        self.plugins = (self.plugins,) if isinstance(self.plugins, str) else tuple(self.plugins)

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first impossible setting and its fix."""
        positive = {
            "latent_dim": "--latent-dim",
            "components": "--components",
            "pseudo_inputs": "--pseudo-inputs",
            "posthoc_components": "--posthoc-components",
            "epochs": "--epochs",
            "batch_size": "--batch-size",
            "checkpoint_every": "--checkpoint-every",
            "eval_batch_size": "--eval-batch-size",
        }
        for name, flag in positive.items():
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{flag} must be a positive integer, got {value!r}")
        if self.guide_components is not None and self.guide_components < 1:
            raise ConfigError(f"--guide-components must be a positive integer, got {self.guide_components!r}")
        if any(h < 1 for h in self.hidden):
            raise ConfigError(f"--hidden sizes must be positive, got {self.hidden!r}")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be positive, got {self.lr!r}")
        if self.w_dim is not None and self.w_dim < 1:
            raise ConfigError(f"--w-dim must be a positive integer, got {self.w_dim!r}")
        if self.zprior_threshold is not None and self.zprior_threshold < 0:
            raise ConfigError(f"--zprior-threshold must be >= 0, got {self.zprior_threshold!r}")
        if self.labels_per_class is not None and self.labels_per_class < 1:
            raise ConfigError(f"--labels-per-class must be a positive integer, got {self.labels_per_class!r}")
        if self.class_weight < 0:
            raise ConfigError(f"--class-weight must be >= 0, got {self.class_weight!r}")
        if self.clip_grad is not None and not self.clip_grad > 0:
            raise ConfigError(f"--clip-grad must be positive, got {self.clip_grad!r}")
        if self.warmup_epochs < 0:
            raise ConfigError(f"--warmup-epochs must be >= 0, got {self.warmup_epochs!r}")
        for f in dataclasses.fields(self):  # the fields declared with choices
            choices = f.metadata.get("choices")
            if choices is not None and getattr(self, f.name) not in choices:
                flag = "--" + f.name.replace("_", "-")
                allowed = " or ".join(map(repr, choices))
                raise ConfigError(f"{flag} must be {allowed}, got {getattr(self, f.name)!r}")
        if self.binarize == "dynamic" and self.likelihood != "bernoulli":
            raise ConfigError("--binarize dynamic needs --likelihood bernoulli")
        for module in self.plugins:
            if not isinstance(module, str) or not all(p.isidentifier() for p in module.split(".")):
                raise ConfigError(f"plugins must be module names such as 'package.module', got {module!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        d["plugins"] = list(self.plugins)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(
                f"unknown configuration keys {unknown}; this run was written by another mixvae version"
            )
        return cls(**d)
