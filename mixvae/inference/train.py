"""The one training loop behind the Python API and the CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from pyro import poutine
from tqdm.auto import tqdm

from mixvae import __version__
from mixvae.config import FORMAT_VERSION, TrainConfig
from mixvae.data import DATASETS, Dataset, load_dataset
from mixvae.errors import CheckpointError, ConfigError, DataError, TrainingDiverged
from mixvae.guides import Guide
from mixvae.inference.checkpoint import load_checkpoint, save_checkpoint
from mixvae.inference.clustering import cluster_assignments, clustering_scores
from mixvae.inference.objectives import LatentScale, TrainingLoss, evaluate_elbo, has_discrete_site, make_elbo
from mixvae.inference.pairs import build, check_names
from mixvae.inference.posthoc import PosthocGMM, fit_posthoc_gmm
from mixvae.inference.warmstart import warm_start
from mixvae.models import VAE

#: files a run writes besides config.json and checkpoint.pt (removed by --overwrite)
RUN_ARTIFACTS = (
    "loss_curves.png",
    "reconstructions.png",
    "prior_samples.png",
    "latent_scatter.png",
    "metrics.jsonl",
    "summary.json",
    "posthoc_gmm.pt",
    "evaluation.json",
    "inference_data.nc",
)

#: seed of the one-off binarisation of evaluation data (``--binarize dynamic``)
EVAL_BINARIZE_SEED = 12345


@dataclass
class Run:
    """A trained (or loaded) run: the model, the guide and how they were made."""

    model: VAE
    guide: Guide
    config: TrainConfig
    run_dir: Path | None = None
    summary: dict[str, Any] | None = None
    epoch: int = 0
    #: the signal's name when SIGINT/SIGTERM stopped training early
    interrupted: str | None = None


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    return device


def check_data(data: Dataset, config: TrainConfig) -> None:
    """Refuse data the likelihood cannot score, with the fix in the message."""
    for split, x in (("training", data.train_x), ("held-out", data.test_x)):
        if x.ndim != 2 or len(x) == 0:
            raise DataError(f"the {split} data must be a non-empty (N, P) tensor, got shape {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise DataError(
                f"the {split} data of {data.name!r} contains NaN or inf; clean or impute it first"
            )
        if config.likelihood == "bernoulli" and (x.min() < 0 or x.max() > 1):
            raise DataError(
                f"the {split} data lies in [{float(x.min()):.3g}, {float(x.max()):.3g}], outside the "
                "[0, 1] a Bernoulli likelihood needs; rescale it or use --likelihood gaussian"
            )
    if data.test_x.shape[1] != data.train_x.shape[1]:
        raise DataError("training and held-out data have different numbers of columns")
    if config.batch_size > len(data.train_x):
        raise ConfigError(
            f"--batch-size {config.batch_size} is larger than the {len(data.train_x)} training "
            "points; use a smaller batch size"
        )


def prepare_run_dir(config: TrainConfig) -> Path:
    """The run folder, created; refuses to overwrite a different run without ``--overwrite``."""
    if config.out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        config.out = os.path.join("runs", f"{config.prior}-{config.guide}-{config.dataset}-{stamp}")
    run_dir = Path(config.out)
    if (run_dir / "checkpoint.pt").exists() and not config.overwrite:
        raise ConfigError(
            f"{run_dir} already holds a run; choose another --out, pass --overwrite to replace it, "
            f"or continue it with --resume {run_dir}"
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(
            f"cannot write to the run folder {run_dir} ({e.strerror}); choose another --out"
        ) from None
    if config.overwrite:  # nothing of the replaced run may pass for the new one's
        from mixvae.inference.eval_figures import FIGURE_NAMES

        for name in (*RUN_ARTIFACTS, *FIGURE_NAMES, *(p.name for p in run_dir.glob("samples-*.png"))):
            (run_dir / name).unlink(missing_ok=True)
    return run_dir


def evaluation_data(x: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """The data as evaluation sees it: with ``--binarize dynamic``, binarised once with a fixed seed."""
    if config.binarize == "dynamic":
        g = torch.Generator(device=x.device).manual_seed(EVAL_BINARIZE_SEED)
        return torch.bernoulli(x, generator=g)
    return x


@dataclass
class _Position:
    """Where the loop stands: enough, with the RNG states, to continue bit for bit."""

    epoch: int = 0  # completed epochs
    step: int = 0  # completed optimisation steps in all
    batch: int = 0  # completed steps of the current epoch
    perm: torch.Tensor | None = None  # the current epoch's data order
    total: float = 0.0  # running sum of the current epoch's per-datapoint losses


class _StopRequest:
    """SIGINT / SIGTERM handler: ask the loop to stop after the current step."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _payload(
    run: Run, optimizer: torch.optim.Optimizer, data_dim: int, pos: _Position, gen: torch.Generator
) -> dict[str, Any]:
    """The checkpoint: tensors, numbers and JSON strings only (loadable with weights_only)."""
    return {
        "format_version": FORMAT_VERSION,
        "mixvae_version": __version__,
        "config": run.config.to_json(),
        "data_dim": data_dim,
        "epoch": pos.epoch,
        "position": {
            "step": pos.step,
            "batch": pos.batch,
            "total": pos.total,
            "perm": pos.perm if pos.batch else None,
        },
        "model": run.model.state_dict(),
        "guide": run.guide.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "data": gen.get_state(),
            "python": json.dumps(random.getstate()),
            "numpy": json.dumps(np.random.get_state(legacy=False), default=_json_array),
        },
    }


def _json_array(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(type(obj))


def _restore_rng(rng: dict[str, Any], gen: torch.Generator) -> None:
    torch.set_rng_state(rng["torch"])
    if rng["cuda"]:
        torch.cuda.set_rng_state_all(rng["cuda"])
    gen.set_state(rng["data"])
    version, state, gauss = json.loads(rng["python"])
    random.setstate((version, tuple(state), gauss))
    np_state = json.loads(rng["numpy"])
    np_state["state"] = {k: np.uint64(v) if isinstance(v, int) else v for k, v in np_state["state"].items()}
    np.random.set_state(np_state)


def _nonfinite_report(model: VAE, guide: Guide, x: torch.Tensor, num_data: int) -> str:
    """Which parameters or log-density terms are not finite (for the divergence message)."""
    bad_params = [
        name
        for module, prefix in ((model, "model"), (guide, "guide"))
        for name, p in module.named_parameters(prefix=prefix)
        if not torch.isfinite(p).all() or (p.grad is not None and not torch.isfinite(p.grad).all())
    ]
    if bad_params:
        return f"non-finite parameters or gradients: {', '.join(bad_params[:5])}"
    with torch.no_grad(), pyro.validation_enabled(False):
        guide_tr = poutine.trace(guide).get_trace(x, num_data)
        model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x, num_data)
    terms = [
        f"{where} {name}"
        for where, tr in (("model", model_tr), ("guide", guide_tr))
        for name, site in tr.nodes.items()
        if site["type"] == "sample"
        and hasattr(site["fn"], "log_prob")
        and not torch.isfinite(site["fn"].log_prob(site["value"])).all()
    ]
    return f"non-finite log-density terms: {', '.join(terms)}" if terms else "no single term to blame"


def _diverged(run: Run, xb: torch.Tensor, n: int, where: str, ckpt: Path, what: str) -> TrainingDiverged:
    return TrainingDiverged(
        f"{what} at {where} ({_nonfinite_report(run.model, run.guide, xb, n)}); the last good "
        f"checkpoint ({ckpt}) is kept; lower --lr, set --clip-grad or lengthen --warmup-epochs"
    )


def _all_finite(params: list[torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in params)


def _check_params(
    run: Run,
    params: list[torch.Tensor],
    xb: torch.Tensor,
    n: int,
    where: str,
    ckpt: Path,
    cause: BaseException | None = None,
) -> None:
    """Raise :class:`TrainingDiverged` before a non-finite parameter can reach a checkpoint."""
    if not _all_finite(params):
        raise _diverged(run, xb, n, where, ckpt, "the parameters became non-finite") from cause


def train(
    config: TrainConfig | None = None,
    *,
    dataset: Dataset | None = None,
    progress: bool = True,
    figures: bool = True,
    after_step: Callable[[int], None] | None = None,
    **overrides: Any,
) -> Run:
    """Train a model/guide pair on the ELBO of :func:`~mixvae.inference.objectives.make_elbo`.

    With ``objective="auto"`` (the default) the pairs for which
    :func:`~mixvae.inference.objectives.direct_elbo_applies` compute that
    estimator by :func:`~mixvae.inference.objectives.direct_loss` (same draws,
    value and gradients, no Pyro tracing per step); ``objective="pyro"`` runs
    Pyro's ELBO at every step (:class:`~mixvae.inference.objectives.TrainingLoss`).

    Writes ``config.json``, ``metrics.jsonl`` (one line per epoch),
    ``checkpoint.pt`` (every ``checkpoint_every`` epochs and at the end),
    ``summary.json`` and PNG figures into the run folder.  SIGINT or SIGTERM
    stops after the current step with a checkpoint that :func:`resume`
    continues exactly; the returned run then has ``interrupted`` set.

    :param config: the run's settings; ``overrides`` replace single fields
        (``train(epochs=5, prior="standard")``).
    :param dataset: data to train on instead of ``config.dataset`` (its name is
        recorded, the data themselves are not saved).
    :param progress: show a tqdm progress bar with the running loss.
    :param figures: write the PNG figures.
    :param after_step: called with the number of completed steps after each step.
    :returns: the trained :class:`Run`.
    """
    config = dataclasses.replace(config or TrainConfig(), **overrides)
    if dataset is not None:
        config.dataset = dataset.name  # what the run was trained on, for later commands
    config.validate()
    check_names(config)
    device = resolve_device(config.device)
    if dataset is None:
        DATASETS[config.dataset]  # unknown names fail before any loading
    data = dataset if dataset is not None else load_dataset(config.dataset, config.data_dir, config.download)
    check_data(data, config)
    run_dir = prepare_run_dir(config)
    (run_dir / "config.json").write_text(config.to_json() + "\n")
    pyro.set_rng_seed(config.seed)
    model, guide = build(config, data.data_dim)
    run = Run(model.to(device), guide.to(device), config, run_dir)
    # Its own generator: priors without a data-dependent start leave every stream untouched.
    model.prior.initialise_from_data(data.train_x, torch.Generator().manual_seed(config.seed))
    if config.init_from is not None:
        codes_x = evaluation_data(data.train_x.to(device), config)
        origin = warm_start(model, guide, config.init_from, codes_x, config=config, seed=config.seed)
        (run_dir / "init_from.json").write_text(json.dumps(origin, indent=2) + "\n")
    optimizer = _optimizer(run)
    gen = torch.Generator(device=device).manual_seed(config.seed)
    return _fit(
        run, data, optimizer, gen, _Position(), progress=progress, figures=figures, after_step=after_step
    )


def resume(
    run_dir: str | Path,
    *,
    epochs: int | None = None,
    dataset: Dataset | None = None,
    device: str | None = None,
    data_dir: str | None = None,
    download: bool | None = None,
    progress: bool = True,
    figures: bool = True,
    after_step: Callable[[int], None] | None = None,
) -> Run:
    """Continue a run from its ``checkpoint.pt`` up to ``epochs`` epochs in total.

    ``device``, ``data_dir`` and ``download`` may differ from the stored
    configuration (where the run computes and where its data files are, e.g.
    after moving them, or for a run trained on a :class:`Dataset` passed in
    Python, whose configuration names no folder); everything else is the
    stored run's.

    The configuration, the optimiser state, every random state and the
    position inside the epoch come from the checkpoint, so an interrupted and
    resumed run ends with bitwise the same parameters and metrics (on CPU) as
    one trained straight through.
    """
    run_dir = Path(run_dir)
    payload = load_checkpoint(run_dir / "checkpoint.pt", map_location=device or "cpu")
    config = _config_from_payload(payload, run_dir)
    config.epochs = epochs if epochs is not None else config.epochs
    if device is not None:
        config.device = device
    if data_dir is not None:
        config.data_dir = data_dir
    if download is not None:
        config.download = download
    config.out, config.overwrite = str(run_dir), False
    config.validate()
    done = int(payload["epoch"])
    if config.epochs < done:
        raise ConfigError(f"{run_dir} has already trained {done} epochs; ask for --epochs {done} or more")
    dev = resolve_device(config.device)
    data = dataset if dataset is not None else load_dataset(config.dataset, config.data_dir, config.download)
    if data.data_dim != int(payload["data_dim"]):
        raise DataError(
            f"the data have {data.data_dim} columns but the run in {run_dir} was trained on "
            f"{payload['data_dim']}; resume it with the data set it was trained on"
        )
    check_data(data, config)
    (run_dir / "config.json").write_text(config.to_json() + "\n")
    run = _load_into_run(payload, config, run_dir)
    run.model.to(dev)
    run.guide.to(dev)
    optimizer = _optimizer(run)
    optimizer.load_state_dict(payload["optimizer"])
    gen = torch.Generator(device=dev)
    _restore_rng(payload["rng"], gen)
    p = payload["position"]
    pos = _Position(done, int(p["step"]), int(p["batch"]), p["perm"], float(p["total"]))
    _truncate_metrics(run_dir / "metrics.jsonl", done)
    return _fit(run, data, optimizer, gen, pos, progress=progress, figures=figures, after_step=after_step)


_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def adam(params: Iterable[torch.Tensor], lr: float) -> torch.optim.Adam:
    """torch's Adam over ``params``, with its fused kernel wherever every parameter allows it.

    The fused update is the same update (to float rounding) in one kernel
    instead of a Python loop of five tensor operations per parameter: for the
    784-512-512 VAE's parameters on the 2-core CPU it took 0.83 ms a step
    against 2.93 ms.  Parameters on devices or of dtypes the kernel does not
    support get the default implementation.
    """
    params = list(params)
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype in _FUSED_DTYPES for p in params)
    return torch.optim.Adam(params, lr=lr, fused=True if fused else None)


def _optimizer(run: Run) -> torch.optim.Optimizer:
    return adam([*run.model.parameters(), *run.guide.parameters()], lr=run.config.lr)


def _truncate_metrics(path: Path, epochs: int) -> None:
    """Drop metric lines written after the checkpoint (e.g. before a divergence)."""
    if path.exists():
        lines = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["epoch"] <= epochs]
        path.write_text("".join(ln + "\n" for ln in lines))


@dataclass
class LabelledSplit:
    """Indices into the training set: labelled (semi-supervised) and unlabelled points."""

    labelled: torch.Tensor
    unlabelled: torch.Tensor


def labelled_split(data: Dataset, config: TrainConfig, model: VAE, guide: Guide) -> LabelledSplit:
    """The first ``labels_per_class`` points of each class (in a seeded order) keep their label.

    :raises ConfigError: when labels cannot be used: no labels in the data, no
        discrete site, or a number of components that differs from the number of classes.
    """
    everything = torch.arange(len(data.train_x))
    if config.labels_per_class is None:
        return LabelledSplit(everything[:0], everything)
    if data.train_y is None:
        raise ConfigError(f"--labels-per-class needs labels, and data set {data.name!r} has none")
    k = model.prior.num_components
    if model.prior.discrete_site is None:
        raise ConfigError(
            f"--labels-per-class needs a prior with a discrete component; prior {model.prior.name!r} has none"
        )
    if k != data.num_classes:
        raise ConfigError(
            f"--labels-per-class makes the labels the values of {model.prior.discrete_site!r}: use "
            f"--components {data.num_classes} (the number of classes), not {k}"
        )
    order = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(config.seed))
    labels = data.train_y[order]
    chosen = []
    for c in range(k):
        members = order[labels == c]
        if len(members) < config.labels_per_class:
            raise ConfigError(
                f"class {c} has only {len(members)} training points; use --labels-per-class "
                f"{len(members)} or fewer"
            )
        chosen.append(members[: config.labels_per_class])
    labelled = torch.cat(chosen).sort().values
    mask = torch.ones(len(everything), dtype=torch.bool)
    mask[labelled] = False
    return LabelledSplit(labelled, everything[mask])


def _labelled_loss(
    run: Run,
    elbo: Any,
    warmup: LatentScale,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    gen: torch.Generator,
) -> torch.Tensor:
    """Negative ELBO of a labelled minibatch (y observed) plus the classification loss.

    The classification term of Kingma et al. (2014), ``class_weight`` times the
    cross-entropy of q(y|x) summed over the labelled set, applies when the guide
    has a classifier q(y|x) (the ``categorical`` guide).
    """
    idx = torch.randint(len(x), (batch_size,), generator=gen, device=x.device)
    xb, yb = x[idx], y[idx]
    if run.config.binarize == "dynamic":
        xb = torch.bernoulli(xb, generator=gen)
    loss = elbo.differentiable_loss(warmup(run.model), warmup(run.guide), xb, len(x), yb)
    if run.guide.discrete_site is not None and run.config.class_weight > 0:
        ce = torch.nn.functional.cross_entropy(run.guide.component_logits(xb), yb)
        loss = loss + run.config.class_weight * len(x) * ce
    return loss


def _fit(
    run: Run,
    data: Dataset,
    optimizer: torch.optim.Optimizer,
    gen: torch.Generator,
    pos: _Position,
    *,
    progress: bool,
    figures: bool,
    after_step: Callable[[int], None] | None = None,
) -> Run:
    """The loop shared by :func:`train` and :func:`resume`."""
    config, model, guide = run.config, run.model, run.guide
    assert run.run_dir is not None
    device = next(model.parameters()).device
    split = labelled_split(data, config, run.model, run.guide)
    train_x = data.train_x[split.unlabelled].to(device)
    heldout_x = evaluation_data(data.test_x.to(device), config)
    warmup = LatentScale()
    analytic_kl = config.kl == "analytic"
    unlabelled_loss = TrainingLoss(model, guide, objective=config.objective, analytic_kl=analytic_kl)
    if split.labelled.numel():
        labelled_x = data.train_x[split.labelled].to(device)
        labelled_y = data.train_y[split.labelled].to(device)
        labelled_bs = min(config.batch_size, len(labelled_x))
        # Labelled points observe the discrete site: nothing is enumerated for them.
        labelled_elbo = make_elbo(enumerates=False, analytic_kl=analytic_kl)
    params = [*model.parameters(), *guide.parameters()]
    n, bs = len(train_x), config.batch_size
    steps_per_epoch = math.ceil(n / bs)
    warmup_steps = config.warmup_epochs * steps_per_epoch
    ckpt = run.run_dir / "checkpoint.pt"
    start = time.perf_counter()
    # Denormal floats in Adam's moments slow CPU training by 40-60% on MNIST.
    torch.set_flush_denormal(True)
    bar = tqdm(
        total=config.epochs * steps_per_epoch,
        initial=pos.step,
        disable=not progress,
        unit="step",
        mininterval=0.5,
    )
    try:
        with pyro.get_param_store().scope(), warnings.catch_warnings(), _StopRequest() as stop:
            # A non-finite loss raises TrainingDiverged below; Pyro's own warning is noise.
            warnings.filterwarnings("ignore", message="Encountered NaN", category=UserWarning)
            while pos.epoch < config.epochs:
                t0 = time.perf_counter()
                if pos.batch == 0:
                    pos.perm, pos.total = torch.randperm(n, generator=gen, device=device), 0.0
                # (a run resumed after the last step of an epoch takes no step before the checks below)
                xb = train_x[:bs]
                while pos.batch < steps_per_epoch:
                    xb = train_x[pos.perm[pos.batch * bs : (pos.batch + 1) * bs]]
                    if config.binarize == "dynamic":
                        xb = torch.bernoulli(xb, generator=gen)
                    warmup.beta = min(1.0, (pos.step + 1) / warmup_steps) if warmup_steps else 1.0
                    # Validate the first step only (distribution arguments; with Pyro's ELBO
                    # also model/guide mismatches): it costs about 5% per step after that.
                    try:
                        with pyro.validation_enabled(pos.step == 0):
                            loss = unlabelled_loss(xb, n, beta=warmup.beta)
                            if split.labelled.numel():
                                loss = loss + _labelled_loss(
                                    run, labelled_elbo, warmup, labelled_x, labelled_y, labelled_bs, gen
                                )
                    except (RuntimeError, ValueError) as e:
                        # A NaN update can make a distribution refuse its parameters
                        # (e.g. sampling a Categorical with NaN weights): name the cause.
                        if pos.step > 0:
                            where = f"epoch {pos.epoch + 1}, step {pos.batch}"
                            _check_params(run, params, xb, n, where, ckpt, cause=e)
                        raise
                    optimizer.zero_grad(set_to_none=True)
                    finite = bool(torch.isfinite(loss))
                    if finite:
                        loss.backward()
                        if config.clip_grad is not None:
                            norm = torch.nn.utils.clip_grad_norm_(params, config.clip_grad)
                            finite = bool(torch.isfinite(norm))
                    # Without clipping the gradients are not scanned at every step (that
                    # cost ~15% of a step): a non-finite gradient makes the parameters
                    # non-finite, which the next loss, or the check before each
                    # checkpoint, reports.  The checkpoint on disk stays the last good one.
                    if not finite:
                        where = f"epoch {pos.epoch + 1}, step {pos.batch + 1}"
                        what = f"the loss became {float(loss.detach())}"
                        if torch.isfinite(loss):
                            what = "the gradient norm became non-finite"
                        elif pos.batch > 0 and not _all_finite(params):
                            # the previous update, not this batch, broke the parameters
                            where = f"epoch {pos.epoch + 1}, step {pos.batch}"
                            what = "the parameters became non-finite"
                        raise _diverged(run, xb, n, where, ckpt, what)
                    optimizer.step()
                    pos.step += 1
                    pos.batch += 1
                    pos.total += float(loss.detach()) / n
                    bar.update()
                    if pos.batch % 10 == 1:
                        bar.set_postfix_str(
                            f"epoch {pos.epoch + 1} loss {pos.total / pos.batch:.2f}", refresh=False
                        )
                    if after_step is not None:
                        after_step(pos.step)
                    if stop.signal:
                        _check_params(run, params, xb, n, f"epoch {pos.epoch + 1}, step {pos.batch}", ckpt)
                        save_checkpoint(ckpt, _payload(run, optimizer, data.data_dim, pos, gen))
                        run.epoch, run.interrupted = pos.epoch, stop.signal
                        return run
                train_seconds = time.perf_counter() - t0  # the optimisation steps alone
                _check_params(run, params, xb, n, f"epoch {pos.epoch + 1}, step {pos.batch}", ckpt)
                pos.epoch, pos.batch = pos.epoch + 1, 0
                run.epoch = pos.epoch
                record = {
                    "epoch": pos.epoch,
                    "step": pos.step,
                    "beta": min(1.0, pos.step / warmup_steps) if warmup_steps else 1.0,  # the last step's
                    "train_loss": pos.total / steps_per_epoch,
                    "heldout_elbo": evaluate_elbo(model, guide, heldout_x, batch_size=config.eval_batch_size),
                    "train_seconds": train_seconds,
                    "seconds": time.perf_counter() - t0,
                }
                with open(run.run_dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
                # A signal that arrived during the epoch-end evaluation also gets a
                # checkpoint, so that no finished epoch is lost.
                if pos.epoch % config.checkpoint_every == 0 or pos.epoch == config.epochs or stop.signal:
                    save_checkpoint(ckpt, _payload(run, optimizer, data.data_dim, pos, gen))
                if stop.signal:
                    run.interrupted = stop.signal
                    return run
            bar.close()
            if getattr(model.prior, "fits_posthoc_gmm", False):
                ensure_posthoc_gmm(run, data, refit=True)
            run.summary = summarize(run, data, seconds=time.perf_counter() - start)
            (run.run_dir / "summary.json").write_text(json.dumps(run.summary, indent=2) + "\n")
            if figures:
                metrics = [json.loads(ln) for ln in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
                write_figures(run, data, metrics)
    finally:
        bar.close()
        torch.set_flush_denormal(False)
    return run


def ensure_posthoc_gmm(run: Run, data: Dataset, refit: bool = False) -> PosthocGMM:
    """The run's post-hoc GMM: loaded from the run folder, or fitted and saved there."""
    assert run.run_dir is not None
    gmm = None if refit else PosthocGMM.load(run.run_dir)
    if gmm is None:
        device = next(run.guide.parameters()).device
        gmm = fit_posthoc_gmm(
            run.guide,
            data.train_x.to(device),
            run.config.posthoc_components,
            select_by_bic=run.config.posthoc_bic,
            seed=run.config.seed,
        )
        gmm.save(run.run_dir)
    return gmm


def summarize(run: Run, data: Dataset, seconds: float | None = None) -> dict[str, Any]:
    """Final ELBOs (nats per datapoint, beta = 1) and, where possible, clustering scores."""
    config, model, guide = run.config, run.model, run.guide
    device = next(model.parameters()).device
    test_x = evaluation_data(data.test_x.to(device), config)
    summary: dict[str, Any] = {
        "prior": config.prior,
        "guide": config.guide,
        "dataset": data.name,
        "epochs": run.epoch,
        "num_train": len(data.train_x),
        "num_heldout": len(data.test_x),
        "train_elbo": evaluate_elbo(
            model, guide, evaluation_data(data.train_x.to(device), config), batch_size=config.eval_batch_size
        ),
        "heldout_elbo": evaluate_elbo(model, guide, test_x, batch_size=config.eval_batch_size),
    }
    if seconds is not None:
        summary["train_seconds"] = seconds
    if data.test_y is not None and has_discrete_site(model, guide):
        clusters = cluster_assignments(model, guide, test_x, batch_size=config.eval_batch_size).cpu()
        summary["clustering"] = {"split": "heldout", **clustering_scores(clusters, data.test_y)}
        if config.labels_per_class is not None:
            # The labels fixed the meaning of each component: no matching needed.
            summary["classification_accuracy"] = float((clusters == data.test_y).float().mean())
            summary["labels_used"] = config.labels_per_class * int(data.num_classes or 0)
    return summary


def write_figures(run: Run, data: Dataset, metrics: list[dict[str, Any]]) -> None:
    """loss_curves.png, reconstructions.png, prior_samples.png and (D = 2) latent_scatter.png."""
    from mixvae.inference import figures

    assert run.run_dir is not None
    device = next(run.model.parameters()).device
    test_x = data.test_x.to(device)
    if metrics:
        figures.plot_losses(metrics, run.run_dir / "loss_curves.png")
    if data.image_shape is not None:
        figures.plot_reconstructions(
            run.model, run.guide, test_x, data.image_shape, run.run_dir / "reconstructions.png"
        )
        figures.plot_prior_samples(run.model, data.image_shape, run.run_dir / "prior_samples.png")
    if run.config.latent_dim == 2:
        n = min(5000, len(test_x))
        labels = None if data.test_y is None else data.test_y[:n]
        figures.plot_latent_scatter(run.guide, test_x[:n], labels, run.run_dir / "latent_scatter.png")


def _config_from_payload(payload: dict[str, Any], run_dir: Path) -> TrainConfig:
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{run_dir} was written with checkpoint format {payload.get('format_version')} "
            f"(mixvae {payload.get('mixvae_version')}); this mixvae {__version__} reads format "
            f"{FORMAT_VERSION}: retrain the run with this version"
        )
    try:
        return TrainConfig.from_dict(json.loads(payload["config"]))
    except (ConfigError, TypeError, ValueError) as e:
        raise CheckpointError(f"{run_dir} holds a configuration this mixvae cannot use ({e})") from None


def _load_into_run(payload: dict[str, Any], config: TrainConfig, run_dir: Path) -> Run:
    model, guide = build(config, int(payload["data_dim"]))
    try:
        model.load_state_dict(payload["model"])
        guide.load_state_dict(payload["guide"])
    except RuntimeError as e:
        raise CheckpointError(
            f"{run_dir}/checkpoint.pt does not fit the configuration stored with it "
            f"({str(e).splitlines()[0]}); was it copied from another run?"
        ) from None
    return Run(model, guide, config, run_dir, epoch=int(payload["epoch"]))


def load_run(run_dir: str | Path, device: str = "cpu") -> Run:
    """Rebuild the model and guide of a run folder from its ``checkpoint.pt``."""
    run_dir = Path(run_dir)
    payload = load_checkpoint(run_dir / "checkpoint.pt", map_location=device)
    run = _load_into_run(payload, _config_from_payload(payload, run_dir), run_dir)
    run.model.to(device)
    run.guide.to(device)
    summary_path = run_dir / "summary.json"
    run.summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    return run
