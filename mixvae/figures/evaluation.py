"""PNG figures of an evaluation (matplotlib's object API: no pyplot, no global backend).

Every figure is ``figsize * 100`` pixels (dpi 100, no tight bounding box), so
its size follows from its layout; each function returns the saved
:class:`~matplotlib.figure.Figure`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mixvae.figures.training import image_grid, new_figure
from mixvae.models import VAE
from mixvae.rng import seeded
from mixvae.runs.files import save_figure
from mixvae.runs.folder import EVALUATION_FIGURES as FIGURE_NAMES

#: latent dimensions shown in the density figure
MAX_DENSITY_DIMS = 16


def _kde_curve(values: np.ndarray, grid: np.ndarray) -> np.ndarray | None:
    from scipy.stats import gaussian_kde

    # A constant sample (a dimension the encoder switched off) has no KDE.
    if values.std() < 1e-8 * max(1.0, abs(values.mean())):
        return None
    return gaussian_kde(values)(grid)


def plot_latent_densities(prior_z: torch.Tensor, posterior_z: torch.Tensor, path: str | Path) -> Any:
    """Prior vs aggregate-posterior density per latent dimension (KDE of the draws).

    Up to 16 dimensions, 4 panels a row; size (3 cols) x (2.6 rows + 0.6) inches.
    """
    p, q = prior_z.detach().cpu().numpy(), posterior_z.detach().cpu().numpy()
    d = min(p.shape[1], MAX_DENSITY_DIMS)
    cols = min(d, 4)
    rows = math.ceil(d / cols)
    fig = new_figure(3 * cols, 2.6 * rows + 0.6)
    for j in range(d):
        ax = fig.add_subplot(rows, cols, j + 1)
        lo, hi = min(p[:, j].min(), q[:, j].min()), max(p[:, j].max(), q[:, j].max())
        pad = 0.1 * (hi - lo) + 1e-3
        grid = np.linspace(lo - pad, hi + pad, 200)
        for values, label in ((p[:, j], "prior p(z)"), (q[:, j], "aggregate posterior q(z)")):
            curve = _kde_curve(values, grid)
            if curve is None:
                ax.axvline(values.mean(), label=f"{label} (constant)")
            else:
                ax.plot(grid, curve, label=label)
        ax.set_title(f"dimension {j + 1}")
        ax.set_xlabel(f"z{j + 1}")
        ax.set_ylabel("density")
        ax.legend(fontsize="x-small")
    fig.suptitle("prior vs aggregate posterior per latent dimension (KDE of draws)")
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def plot_latent_projection(
    posterior_z: torch.Tensor,
    prior_z: torch.Tensor,
    labels: torch.Tensor | None,
    path: str | Path,
    prior: Any = None,
) -> Any:
    """Aggregate-posterior draws in 2-D, coloured by label, with the prior's density contours.

    D = 2: the latent plane itself, contours of the exact ``prior`` density
    (a torch distribution) when given.  D > 2: the first two principal
    components of the aggregate-posterior draws, contours from a KDE of the
    projected prior draws.  Size 6.5 x 5 inches.  D = 1 is refused.
    """
    from scipy.stats import gaussian_kde
    from sklearn.decomposition import PCA

    q, p = posterior_z.detach().cpu().numpy(), prior_z.detach().cpu().numpy()
    if q.shape[1] < 2:
        raise ValueError("a 2-D projection needs a latent dimension of at least 2")
    if q.shape[1] == 2:
        qp, pp, axes = q, p, ("z1", "z2")
    else:
        pca = PCA(n_components=2).fit(q)
        qp, pp = pca.transform(q), pca.transform(p)
        ratio = pca.explained_variance_ratio_
        axes = (f"PC1 ({ratio[0]:.0%} of q(z) variance)", f"PC2 ({ratio[1]:.0%})")
    both = np.concatenate([qp, pp])
    lo, hi = np.percentile(both, 0.5, axis=0), np.percentile(both, 99.5, axis=0)
    pad = 0.1 * (hi - lo)
    gx, gy = np.meshgrid(*(np.linspace(lo[i] - pad[i], hi[i] + pad[i], 100) for i in range(2)))
    grid = np.stack([gx.ravel(), gy.ravel()])
    if q.shape[1] == 2 and prior is not None:
        with torch.no_grad():
            dens = prior.log_prob(torch.as_tensor(grid.T, dtype=torch.float32)).exp().numpy()
        how = "exact"
    else:
        dens = gaussian_kde(pp.T)(grid)
        how = "KDE of projected draws"
    fig = new_figure(6.5, 5)
    ax = fig.add_subplot()
    colours = None if labels is None else labels.cpu().numpy()
    points = ax.scatter(qp[:, 0], qp[:, 1], c=colours, cmap="tab10", s=4, label="aggregate posterior draws")
    ax.contour(gx, gy, dens.reshape(gx.shape), levels=6, colors="black", linewidths=0.8)
    ax.plot([], [], color="black", linewidth=0.8, label=f"prior density ({how})")
    if labels is not None:
        fig.colorbar(points, ax=ax, label="label")
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.set_title("aggregate posterior q(z) and prior p(z)")
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def plot_sample_sources(
    images: Mapping[str, torch.Tensor],
    shape: Sequence[int],
    path: str | Path,
    scores: Mapping[str, Any] | None = None,
    grid: int = 10,
) -> Any:
    """Decoded samples from each latent source side by side (``grid`` x ``grid`` each).

    ``scores`` (name -> :class:`~mixvae.evaluation.sample_quality.SourceQuality`)
    puts the classifier scores under each panel.  Size (3.2 sources) x 3.9 inches.
    """
    fig = new_figure(3.2 * len(images), 3.9)
    for i, (name, imgs) in enumerate(images.items()):
        ax = fig.add_subplot(1, len(images), i + 1)
        rows = min(grid, len(imgs) // grid)
        ax.imshow(image_grid(imgs[: rows * grid], rows, grid, shape), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(name)
        if scores is not None and name in scores:
            s = scores[name]
            ax.set_xlabel(f"max-prob {s.mean_max_prob:.2f}, class entropy {s.class_entropy:.2f}")
        else:
            ax.set_xlabel("draws")
        ax.set_ylabel("draws" if i == 0 else "")
    fig.suptitle("decoded samples by latent source (classifier scores below)")
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def plot_confusion(
    clusters: np.ndarray, labels: np.ndarray | torch.Tensor, path: str | Path, source: str = "model"
) -> Any:
    """Counts of each cluster (rows, ordered by majority label) against the true labels. 6.5 x 5.5 inches."""
    from sklearn.metrics.cluster import contingency_matrix

    labels = np.asarray(labels)
    counts = contingency_matrix(clusters, labels)  # rows: clusters used, cols: labels present
    cluster_ids, label_ids = np.unique(clusters), np.unique(labels)
    order = np.lexsort((-counts.max(1), counts.argmax(1)))  # by majority label, then size
    counts, cluster_ids = counts[order], cluster_ids[order]
    fig = new_figure(6.5, 5.5)
    ax = fig.add_subplot()
    im = ax.imshow(counts, cmap="Blues", aspect="auto", vmin=0)
    fig.colorbar(im, ax=ax, label="count")
    ax.set_xticks(range(len(label_ids)), [str(v) for v in label_ids])
    ax.set_yticks(range(len(cluster_ids)), [str(v) for v in cluster_ids])
    if counts.size <= 400:
        for (r, c), v in np.ndenumerate(counts):
            if v:
                colour = "white" if v > counts.max() / 2 else "black"
                ax.text(c, r, str(v), ha="center", va="center", fontsize=6, color=colour)
    ax.set_xlabel("true label")
    ax.set_ylabel("cluster")
    ax.set_title(f"clusters ({source}) vs labels")
    fig.tight_layout()
    save_figure(fig, path)
    return fig


@torch.no_grad()
def plot_component_samples(model: VAE, shape: Sequence[int], path: str | Path, cols: int = 10) -> Any:
    """Decoded draws from each prior component, one row each (mixture priors only).

    Size (0.6 cols + 1.2) x (0.6 K + 1) inches.
    """
    k = model.prior.num_components
    if not k:
        raise ValueError(f"prior {model.prior.name!r} has no components")
    images = torch.cat([model.sample(cols, component=j) for j in range(k)])
    h, w = shape[-2:]
    fig = new_figure(0.6 * cols + 1.2, 0.6 * k + 1)
    ax = fig.add_subplot()
    ax.imshow(image_grid(images, k, cols, shape), cmap="gray", vmin=0, vmax=1)
    ax.set_yticks([h * (j + 0.5) for j in range(k)], [str(j) for j in range(k)])
    ax.set_xticks([w * (j + 0.5) for j in range(cols)], [str(j + 1) for j in range(cols)])
    ax.tick_params(labelsize=6)
    ax.set_xlabel("draw")
    ax.set_ylabel("prior component")
    ax.set_title("samples from each prior component")
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def plot_khat(khat: torch.Tensor, path: str | Path) -> Any:
    """Histogram of the per-datapoint Pareto k-hat with the 0.5 and 0.7 thresholds. 6 x 4 inches."""
    k = khat.cpu().numpy()
    finite = k[np.isfinite(k)]
    fig = new_figure(6, 4)
    ax = fig.add_subplot()
    ax.hist(finite, bins=40, color="grey", label="datapoints")
    ax.axvline(0.5, color="tab:orange", linestyle="--", label="0.5: good below")
    ax.axvline(0.7, color="tab:red", linestyle="--", label="0.7: unreliable above")
    ax.set_xlabel("Pareto k-hat of the importance weights")
    ax.set_ylabel("number of datapoints")
    ax.set_title(f"importance weights per datapoint: {np.mean(k > 0.7):.1%} with k-hat > 0.7")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def write_evaluation_figures(
    run_dir: str | Path,
    *,
    model: VAE,
    prior_z: torch.Tensor,
    posterior_z: torch.Tensor,
    posterior_labels: torch.Tensor | None,
    khat: torch.Tensor,
    image_shape: Sequence[int] | None,
    sources: Mapping[str, Any],
    clusters: Any,
    cluster_source: str,
    labels: torch.Tensor | None,
    seed: int = 0,
) -> list[str]:
    """Write the ``eval_*.png`` figures that apply to this run; returns their file names."""
    run_dir = Path(run_dir)
    written = []

    def path(name: str) -> Path:
        assert name in FIGURE_NAMES
        written.append(name)
        return run_dir / name

    plot_latent_densities(prior_z, posterior_z, path("eval_latent_densities.png"))
    if prior_z.shape[1] >= 2:
        try:
            density = model.prior.marginal()
        except NotImplementedError:  # priors with more latents than z (dilokthanakul's w)
            density = None
        plot_latent_projection(
            posterior_z, prior_z, posterior_labels, path("eval_latent_projection.png"), density
        )
    plot_khat(khat, path("eval_khat.png"))
    if clusters is not None and labels is not None:
        plot_confusion(clusters.assignments, labels, path("eval_confusion.png"), cluster_source)
    if image_shape is not None:
        if sources:
            images = {name: s.images for name, s in sources.items() if s.images is not None}
            plot_sample_sources(images, image_shape, path("eval_samples_by_source.png"), sources)
        if model.prior.num_components:
            with seeded(seed, next(model.parameters()).device):
                plot_component_samples(model, image_shape, path("eval_component_samples.png"))
    return written
