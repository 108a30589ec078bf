"""PNG figures of a run (matplotlib's object API: no pyplot, no global backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mixvae.data import Dataset
from mixvae.errors import ConfigError
from mixvae.guides import Guide
from mixvae.models import VAE
from mixvae.runs.files import save_figure

if TYPE_CHECKING:
    from mixvae.runs.folder import Run


def new_figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def figure_shape(
    data_shape: Sequence[int], image_shape: tuple[int, int] | None = None
) -> tuple[int, ...] | None:
    """The shape images are drawn in: ``(C, H, W)`` for image data, else ``image_shape`` (flat
    grey images) or ``None`` (vectors that are no images)."""
    return tuple(data_shape) if len(data_shape) == 3 else image_shape


def square_image_shape(dataset: str, data_dim: int) -> tuple[int, int]:
    """(side, side) for flat data of ``side**2`` values, to draw them as grey images."""
    side = int(round(data_dim**0.5))
    if side * side != data_dim:
        raise ConfigError(f"cannot draw {data_dim}-dimensional data of {dataset!r} as square images")
    return side, side


def image_grid(images: torch.Tensor, rows: int, cols: int, shape: Sequence[int]) -> np.ndarray:
    """``rows x cols`` images of ``shape`` ((H, W) grey or (C, H, W), C = 1 or 3) as one array for
    ``imshow``: (rows H, cols W) grey or (rows H, cols W, 3) colour."""
    c, h, w = (1, *shape) if len(shape) == 2 else shape
    imgs = images.detach().cpu().float().reshape(rows, cols, c, h, w).clamp(0, 1)
    grid = imgs.permute(0, 3, 1, 4, 2).reshape(rows * h, cols * w, c)
    return grid[..., 0].numpy() if c == 1 else grid.numpy()


def plot_losses(metrics: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Training loss (negative beta-ELBO) and held-out negative ELBO per epoch."""
    fig = new_figure(6, 4)
    ax = fig.add_subplot()
    epochs = [m["epoch"] for m in metrics]
    ax.plot(epochs, [m["train_loss"] for m in metrics], label="train loss (-ELBO, with warm-up)")
    scored = [m for m in metrics if "heldout_elbo" in m]  # every epoch, or those of --eval-every
    ax.plot([m["epoch"] for m in scored], [-m["heldout_elbo"] for m in scored], label="held-out -ELBO")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per datapoint")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def plot_clustering_curves(rows: dict[str, Sequence[Sequence[dict[str, Any]]]], path: str | Path) -> None:
    """Held-out cluster accuracy (Hungarian: solid; majority mapping: dotted) and held-out ELBO
    against epochs: one colour per row, one line per seed.

    :param rows: a label -> the ``metrics.jsonl`` records of each of its runs (data with labels
        and a pair with a discrete component); the records without scores (the epochs that
        ``--eval-every`` skips) are left out.
    """
    fig = new_figure(11, 4.2)
    acc, elbo = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    lows = []
    for i, (label, runs) in enumerate(rows.items()):
        colour = f"C{i % 10}"
        for j, records in enumerate(runs):
            metrics = [m for m in records if "clustering" in m]
            epochs = [m["epoch"] for m in metrics]
            shown = label if j == 0 else None
            acc.plot(
                epochs, [100 * m["clustering"]["acc_hungarian"] for m in metrics], colour, lw=1, label=shown
            )
            acc.plot(epochs, [100 * m["clustering"]["acc_majority"] for m in metrics], colour, lw=1, ls=":")
            elbo.plot(epochs, [m["heldout_elbo"] for m in metrics], colour, lw=1, label=shown)
            lows += [m["heldout_elbo"] for m in metrics[len(metrics) // 10 :]]
    acc.set_xlabel("epoch")
    acc.set_ylabel("held-out accuracy, %")
    acc.set_title("solid: Hungarian matching; dotted: majority mapping", fontsize="small")
    elbo.set_xlabel("epoch")
    elbo.set_ylabel("held-out ELBO, nats")
    if lows:  # the first epochs' ELBO would squash the rest of the curves
        elbo.set_ylim(bottom=min(lows) - 2)
    acc.legend(fontsize="small")
    fig.tight_layout()
    save_figure(fig, path)


@torch.no_grad()
def plot_reconstructions(
    model: VAE, guide: Guide, x: torch.Tensor, shape: Sequence[int], path: str | Path
) -> None:
    """Top row: data; bottom row: decoder mean at the encoder mean."""
    n = min(10, len(x))
    recon = model.decoder.mean(guide.q_mean(x[:n]))
    fig = new_figure(n, 2.2)
    ax = fig.add_subplot()
    ax.imshow(image_grid(torch.cat([x[:n], recon]), 2, n, shape), cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title("data (top) and reconstructions (bottom)")
    fig.tight_layout()
    save_figure(fig, path)


@torch.no_grad()
def plot_prior_samples(model: VAE, shape: Sequence[int], path: str | Path, cols: int = 10) -> None:
    """Decoder means of prior draws; one row per component for a mixture prior."""
    k = model.prior.num_components
    if k:
        images = torch.cat([model.sample(cols, component=j) for j in range(k)])
        rows, title = k, "samples from the prior, one row per component"
    else:
        rows, title = cols, "samples from the prior"
        images = model.sample(rows * cols)
    fig = new_figure(cols, rows + 0.4)
    ax = fig.add_subplot()
    ax.imshow(image_grid(images, rows, cols, shape), cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path)


@torch.no_grad()
def plot_latent_scatter(guide: Guide, x: torch.Tensor, labels: torch.Tensor | None, path: str | Path) -> None:
    """Encoder means of a 2-D latent code, coloured by label."""
    z = guide.q_mean(x).cpu().numpy()
    fig = new_figure(5, 5)
    ax = fig.add_subplot()
    colours = None if labels is None else labels.cpu().numpy()
    points = ax.scatter(z[:, 0], z[:, 1], c=colours, cmap="tab10", s=4)
    if labels is not None:
        fig.colorbar(points, ax=ax, label="label")
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    ax.set_title("encoder means of the held-out data")
    fig.tight_layout()
    save_figure(fig, path)


def plot_sample_grid(images: torch.Tensor, shape: Sequence[int], path: str | Path, title: str) -> None:
    """A grid of images shaped ``(rows, cols, *data_shape)``, as :func:`mixvae.evaluation.sampling.sample_images`
    returns."""
    rows, cols = images.shape[:2]
    fig = new_figure(max(2.0, cols * 0.6), rows * 0.6 + 0.5)
    ax = fig.add_subplot()
    ax.imshow(image_grid(images.reshape(rows * cols, -1), rows, cols, shape), cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path)


def write_figures(run: Run, data: Dataset, metrics: list[dict[str, Any]]) -> None:
    """loss_curves.png, reconstructions.png, prior_samples.png and (D = 2) latent_scatter.png."""
    assert run.run_dir is not None
    device = next(run.model.parameters()).device
    test_x = data.test_x.to(device)
    if metrics:
        plot_losses(metrics, run.run_dir / "loss_curves.png")
    shape = figure_shape(data.data_shape, data.image_shape)
    if shape is not None:
        plot_reconstructions(run.model, run.guide, test_x, shape, run.run_dir / "reconstructions.png")
        plot_prior_samples(run.model, shape, run.run_dir / "prior_samples.png")
    if run.config.latent_dim == 2:
        n = min(5000, len(test_x))
        labels = None if data.test_y is None else data.test_y[:n]
        plot_latent_scatter(run.guide, test_x[:n], labels, run.run_dir / "latent_scatter.png")
