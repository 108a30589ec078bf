"""The one training loop behind the Python API and the CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyro
import torch
from tqdm.auto import tqdm

from mixvae.build import build, check_names
from mixvae.config import TrainConfig
from mixvae.data import DATASETS, Dataset, evaluation_data, load_dataset
from mixvae.errors import ConfigError, DataError
from mixvae.evaluation.posthoc import ensure_posthoc_gmm
from mixvae.evaluation.summary import summarize
from mixvae.figures.training import write_figures
from mixvae.inference.divergence import all_finite, check_params, diverged
from mixvae.inference.loss import TrainingLoss
from mixvae.inference.objectives import LatentScale, evaluate_elbo, make_elbo
from mixvae.inference.optim import adam
from mixvae.inference.semisupervised import labelled_loss, labelled_split
from mixvae.inference.setup import check_data, resolve_device
from mixvae.inference.warmstart import warm_start
from mixvae.plugins import record_plugins
from mixvae.runs.checkpoint import Position, checkpoint_payload, load_checkpoint, restore_rng, save_checkpoint
from mixvae.runs.folder import Run, config_from_payload, load_into_run, prepare_run_dir, truncate_metrics


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
    record_plugins(config)  # where the parts came from, for evaluate / sample / resume
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
        codes_x = evaluation_data(data.train_x.to(device), config.binarize)
        origin = warm_start(model, guide, config.init_from, codes_x, config=config, seed=config.seed)
        (run_dir / "init_from.json").write_text(json.dumps(origin, indent=2) + "\n")
    optimizer = _optimizer(run)
    gen = torch.Generator(device=device).manual_seed(config.seed)
    return _fit(
        run, data, optimizer, gen, Position(), progress=progress, figures=figures, after_step=after_step
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
    config = config_from_payload(payload, run_dir)
    config.epochs = epochs if epochs is not None else config.epochs
    if device is not None:
        config.device = device
    if data_dir is not None:
        config.data_dir = data_dir
    if download is not None:
        config.download = download
    config.out, config.overwrite = str(run_dir), False
    config.validate()
    record_plugins(config)
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
    run = load_into_run(payload, config, run_dir)
    run.model.to(dev)
    run.guide.to(dev)
    optimizer = _optimizer(run)
    optimizer.load_state_dict(payload["optimizer"])
    gen = torch.Generator(device=dev)
    restore_rng(payload["rng"], gen)
    p = payload["position"]
    pos = Position(done, int(p["step"]), int(p["batch"]), p["perm"], float(p["total"]))
    truncate_metrics(run_dir / "metrics.jsonl", done)
    return _fit(run, data, optimizer, gen, pos, progress=progress, figures=figures, after_step=after_step)


def _optimizer(run: Run) -> torch.optim.Optimizer:
    return adam([*run.model.parameters(), *run.guide.parameters()], lr=run.config.lr)


def _fit(
    run: Run,
    data: Dataset,
    optimizer: torch.optim.Optimizer,
    gen: torch.Generator,
    pos: Position,
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
    heldout_x = evaluation_data(data.test_x.to(device), config.binarize)
    warmup = LatentScale()
    analytic_kl = config.kl == "analytic"
    unlabelled_loss = TrainingLoss(model, guide, objective=config.objective, analytic_kl=analytic_kl)
    verified = False
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
                            if not verified:  # the direct ELBO against Pyro's, once per process
                                unlabelled_loss.verify(xb, n, beta=warmup.beta)
                                verified = True
                            loss = unlabelled_loss(xb, n, beta=warmup.beta)
                            if split.labelled.numel():
                                loss = loss + labelled_loss(
                                    run, labelled_elbo, warmup, labelled_x, labelled_y, labelled_bs, gen
                                )
                    except (RuntimeError, ValueError) as e:
                        # A NaN update can make a distribution refuse its parameters
                        # (e.g. sampling a Categorical with NaN weights): name the cause.
                        if pos.step > 0:
                            where = f"epoch {pos.epoch + 1}, step {pos.batch}"
                            check_params(run, params, xb, n, where, ckpt, cause=e)
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
                        elif pos.batch > 0 and not all_finite(params):
                            # the previous update, not this batch, broke the parameters
                            where = f"epoch {pos.epoch + 1}, step {pos.batch}"
                            what = "the parameters became non-finite"
                        raise diverged(run, xb, n, where, ckpt, what)
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
                        check_params(run, params, xb, n, f"epoch {pos.epoch + 1}, step {pos.batch}", ckpt)
                        save_checkpoint(
                            ckpt,
                            checkpoint_payload(
                                (run.model, run.guide), run.config, optimizer, data.data_dim, pos, gen
                            ),
                        )
                        run.epoch, run.interrupted = pos.epoch, stop.signal
                        return run
                train_seconds = time.perf_counter() - t0  # the optimisation steps alone
                check_params(run, params, xb, n, f"epoch {pos.epoch + 1}, step {pos.batch}", ckpt)
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
                    save_checkpoint(
                        ckpt,
                        checkpoint_payload(
                            (run.model, run.guide), run.config, optimizer, data.data_dim, pos, gen
                        ),
                    )
                if stop.signal:
                    run.interrupted = stop.signal
                    return run
            bar.close()
            if model.prior.fits_posthoc_gmm:
                ensure_posthoc_gmm(run, data, refit=True)
            run.summary = summarize(run, data, seconds=time.perf_counter() - start)
            run.summary["objective"] = unlabelled_loss.describe()
            (run.run_dir / "summary.json").write_text(json.dumps(run.summary, indent=2) + "\n")
            if figures:
                metrics = [json.loads(ln) for ln in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
                write_figures(run, data, metrics)
    finally:
        bar.close()
        torch.set_flush_denormal(False)
    return run
