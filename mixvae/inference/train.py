"""The one training loop behind the Python API and the CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyro
import torch
from tqdm.auto import tqdm

from mixvae import __version__
from mixvae.config import FORMAT_VERSION, TrainConfig
from mixvae.data import DATASETS, Dataset, load_dataset
from mixvae.errors import CheckpointError, ConfigError, DataError, TrainingDiverged
from mixvae.guides import Guide
from mixvae.inference.checkpoint import load_checkpoint, save_checkpoint
from mixvae.inference.clustering import cluster_assignments, clustering_scores
from mixvae.inference.objectives import LatentScale, evaluate_elbo, has_discrete_site, make_elbo
from mixvae.inference.pairs import build, check_names
from mixvae.models import VAE

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
        raise ConfigError(f"{run_dir} already holds a run; choose another --out or pass --overwrite")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(
            f"cannot write to the run folder {run_dir} ({e.strerror}); choose another --out"
        ) from None
    if config.overwrite:
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    return run_dir


def _eval_data(x: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    if config.binarize == "dynamic":
        g = torch.Generator(device=x.device).manual_seed(EVAL_BINARIZE_SEED)
        return torch.bernoulli(x, generator=g)
    return x


def _payload(
    run: Run, optimizer: torch.optim.Optimizer, data_dim: int, step: int, gen: torch.Generator
) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "mixvae_version": __version__,
        "config": run.config.to_json(),
        "data_dim": data_dim,
        "epoch": run.epoch,
        "step": step,
        "model": run.model.state_dict(),
        "guide": run.guide.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "data": gen.get_state()},
    }


def train(
    config: TrainConfig | None = None,
    *,
    dataset: Dataset | None = None,
    progress: bool = True,
    figures: bool = True,
    **overrides: Any,
) -> Run:
    """Train a model/guide pair with SVI and ``TraceEnum_ELBO(max_plate_nesting=1)``.

    Writes ``config.json``, ``metrics.jsonl`` (one line per epoch),
    ``checkpoint.pt`` (every ``checkpoint_every`` epochs and at the end),
    ``summary.json`` and PNG figures into the run folder.

    :param config: the run's settings; ``overrides`` replace single fields
        (``train(epochs=5, prior="standard")``).
    :param dataset: data to train on instead of ``config.dataset`` (its name is
        recorded, the data themselves are not saved).
    :param progress: show a tqdm progress bar with the running loss.
    :param figures: write the PNG figures.
    :returns: the trained :class:`Run`.
    """
    config = dataclasses.replace(config or TrainConfig(), **overrides)
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
    train_x, test_x = data.train_x.to(device), data.test_x.to(device)
    heldout_x = _eval_data(test_x, config)
    model, guide = build(config, data.data_dim)
    model.to(device)
    guide.to(device)
    run = Run(model, guide, config, run_dir)
    optimizer = torch.optim.Adam([*model.parameters(), *guide.parameters()], lr=config.lr)
    warmup = LatentScale()
    elbo = make_elbo(enumerates=has_discrete_site(model, guide))
    n = len(train_x)
    steps_per_epoch = math.ceil(n / config.batch_size)
    warmup_steps = config.warmup_epochs * steps_per_epoch
    gen = torch.Generator(device=device).manual_seed(config.seed)
    metrics: list[dict[str, Any]] = []
    step = 0
    ckpt = run_dir / "checkpoint.pt"
    start = time.perf_counter()
    # Denormal floats in Adam's moments slow CPU training by 40-60% on MNIST.
    torch.set_flush_denormal(True)
    bar = tqdm(total=config.epochs * steps_per_epoch, disable=not progress, unit="step", mininterval=0.5)
    try:
        with pyro.get_param_store().scope(), warnings.catch_warnings():
            # A non-finite loss raises TrainingDiverged below; Pyro's own warning is noise.
            warnings.filterwarnings("ignore", message="Encountered NaN", category=UserWarning)
            for epoch in range(config.epochs):
                t0 = time.perf_counter()
                perm = torch.randperm(n, generator=gen, device=device)
                total = 0.0
                for i in range(steps_per_epoch):
                    xb = train_x[perm[i * config.batch_size : (i + 1) * config.batch_size]]
                    if config.binarize == "dynamic":
                        xb = torch.bernoulli(xb, generator=gen)
                    warmup.beta = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
                    # Validate the first step only: it catches model/guide mismatches,
                    # and costs about 5% per step after that.
                    with pyro.validation_enabled(step == 0):
                        loss = elbo.differentiable_loss(warmup(model), warmup(guide), xb, n)
                    if not torch.isfinite(loss):
                        raise TrainingDiverged(
                            f"the loss became {float(loss.detach())} at epoch {epoch + 1}, step {i + 1}; "
                            f"the last good checkpoint ({ckpt}) is kept; lower --lr or lengthen "
                            "--warmup-epochs"
                        )
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    step += 1
                    total += float(loss.detach()) / n
                    bar.update()
                    if i % 10 == 0:
                        bar.set_postfix_str(f"epoch {epoch + 1} loss {total / (i + 1):.2f}", refresh=False)
                run.epoch = epoch + 1
                record = {
                    "epoch": run.epoch,
                    "step": step,
                    "beta": warmup.beta,
                    "train_loss": total / steps_per_epoch,
                    "heldout_elbo": evaluate_elbo(model, guide, heldout_x, batch_size=config.eval_batch_size),
                    "seconds": time.perf_counter() - t0,
                }
                metrics.append(record)
                with open(run_dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
                if run.epoch % config.checkpoint_every == 0 or run.epoch == config.epochs:
                    save_checkpoint(ckpt, _payload(run, optimizer, data.data_dim, step, gen))
    finally:
        bar.close()
        torch.set_flush_denormal(False)
    run.summary = summarize(run, data, seconds=time.perf_counter() - start)
    (run_dir / "summary.json").write_text(json.dumps(run.summary, indent=2) + "\n")
    if figures:
        write_figures(run, data, metrics)
    return run


def summarize(run: Run, data: Dataset, seconds: float | None = None) -> dict[str, Any]:
    """Final ELBOs (nats per datapoint, beta = 1) and, where possible, clustering scores."""
    config, model, guide = run.config, run.model, run.guide
    device = next(model.parameters()).device
    test_x = _eval_data(data.test_x.to(device), config)
    summary: dict[str, Any] = {
        "prior": config.prior,
        "guide": config.guide,
        "dataset": data.name,
        "epochs": run.epoch,
        "num_train": len(data.train_x),
        "num_heldout": len(data.test_x),
        "train_elbo": evaluate_elbo(
            model, guide, _eval_data(data.train_x.to(device), config), batch_size=config.eval_batch_size
        ),
        "heldout_elbo": evaluate_elbo(model, guide, test_x, batch_size=config.eval_batch_size),
    }
    if seconds is not None:
        summary["train_seconds"] = seconds
    if data.test_y is not None and has_discrete_site(model, guide):
        clusters = cluster_assignments(model, guide, test_x, batch_size=config.eval_batch_size)
        summary["clustering"] = {"split": "heldout", **clustering_scores(clusters.cpu(), data.test_y)}
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


def load_run(run_dir: str | Path, device: str = "cpu") -> Run:
    """Rebuild the model and guide of a run folder from its ``checkpoint.pt``."""
    run_dir = Path(run_dir)
    payload = load_checkpoint(run_dir / "checkpoint.pt", map_location=device)
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{run_dir} was written with checkpoint format {payload.get('format_version')} "
            f"(mixvae {payload.get('mixvae_version')}); this mixvae reads format {FORMAT_VERSION}"
        )
    config = TrainConfig.from_dict(json.loads(payload["config"]))
    model, guide = build(config, int(payload["data_dim"]))
    try:
        model.load_state_dict(payload["model"])
        guide.load_state_dict(payload["guide"])
    except RuntimeError as e:
        raise CheckpointError(
            f"{run_dir}/checkpoint.pt does not fit the configuration stored with it "
            f"({str(e).splitlines()[0]})"
        ) from None
    model.to(device)
    guide.to(device)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    return Run(model, guide, config, run_dir, summary, int(payload["epoch"]))
